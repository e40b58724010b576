// LineEditor: the chat client's line editing on a terminal, on libedit's native API — history,
// cursor keys and ~/.editrc come from libedit. Character at a time (EL_UNBUFFERED), so the client's
// event loop stays in charge: it calls read_input() whenever stdin is readable. Lines from the
// server are printed above the line being typed, which is then redrawn intact; a line sent is
// taken off the screen so the owner can show it as the room sees it. Printable characters
// arriving together (a paste) are inserted in one go with one redraw per read, not one per key.
// Tab asks the owner's completer. Owned by the chat client, only while stdin and stdout are both
// a terminal; the terminal is put back in its normal mode when the editor is destroyed.
#pragma once

#include <histedit.h>

#include <cwchar>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "chat/room_roster.hpp"

namespace mux {

class LineEditor {
 public:
  // A typed line without its newline, or nullopt at end of input (Ctrl-D on an empty line).
  using LineHandler = std::function<void(std::optional<std::string> line)>;
  // What Tab does, given the UTF-8 text before the cursor.
  using Completer = std::function<chat::Completion(std::string_view before_cursor)>;

  LineEditor(std::string prompt, LineHandler on_line);
  LineEditor(const LineEditor&) = delete;
  LineEditor& operator=(const LineEditor&) = delete;
  ~LineEditor();

  // Stdin is readable: lets libedit take the keys waiting there.
  void read_input();
  // Prints `text` (whole lines, each ending in '\n') above the line being edited.
  void print_above(std::string_view text);
  // The terminal changed size (SIGWINCH): prompt and draft are drawn again, once.
  void resize();
  void set_completer(Completer completer) { completer_ = std::move(completer); }

 private:
  struct EditLineDeleter {
    void operator()(EditLine* editor) const noexcept { ::el_end(editor); }
  };
  struct HistoryDeleter {
    void operator()(History* history) const noexcept { ::history_end(history); }
  };

  static LineEditor& owner_of(EditLine* editor);
  static char* prompt_of(EditLine* editor);
  // libedit's character source (EL_GETCFN): what read_input() read, then blocking reads for the
  // rest of a key sequence split across reads. Reading ourselves is how end of input is told
  // apart from an emptied line, which el_gets reports alike in unbuffered mode.
  static int next_char_of(EditLine* editor, wchar_t* out);
  static unsigned char complete_of(EditLine* editor, int key);
  unsigned char complete();
  int next_char(wchar_t* out);
  [[nodiscard]] bool fill();
  void end_of_input();
  void restart_line();
  [[nodiscard]] bool insert_printable_run(int& drawn_rows_above);
  void redraw_from(int rows_above);
  void erase_sent_line();
  [[nodiscard]] int columns() const;
  [[nodiscard]] int cells(const wchar_t* begin, const wchar_t* end) const;
  [[nodiscard]] int rows_above_cursor() const;

  std::string prompt_;
  LineHandler on_line_;
  Completer completer_;
  std::unique_ptr<History, HistoryDeleter> history_;
  std::unique_ptr<EditLine, EditLineDeleter> editor_;
  HistEvent event_{};
  std::string pending_;  // bytes read from stdin, not yet taken by libedit
  std::size_t pending_at_ = 0;
  std::mbstate_t decode_state_{};
  bool input_ended_ = false;
  bool finished_ = false;
};

}  // namespace mux
