#include "chat/line_editor.hpp"

#include <langinfo.h>
#include <unistd.h>

#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr int kHistorySize = 1000;
constexpr wchar_t kReplacementChar = 0xFFFD;

void write_all(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(STDOUT_FILENO, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the terminal is gone; nothing left to show anything on
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

// libedit decodes keys and measures the screen through the C library's locale. The chat is UTF-8
// on the wire, so prefer the user's locale but fall back to C.UTF-8 when it is not UTF-8.
void use_utf8_locale() {
  std::setlocale(LC_CTYPE, "");
  if (std::strcmp(::nl_langinfo(CODESET), "UTF-8") != 0) std::setlocale(LC_CTYPE, "C.UTF-8");
}

}  // namespace

LineEditor::LineEditor(std::string prompt, LineHandler on_line)
    : prompt_(std::move(prompt)), on_line_(std::move(on_line)) {
  use_utf8_locale();
  history_.reset(::history_init());
  if (!history_) throw std::runtime_error("line editor: cannot set up history");
  ::history(history_.get(), &event_, H_SETSIZE, kHistorySize);
  ::history(history_.get(), &event_, H_SETUNIQUE, 1);
  editor_.reset(::el_init("mux", stdin, stdout, stderr));
  if (!editor_) throw std::runtime_error("line editor: cannot set up the terminal");
  EditLine* editor = editor_.get();
  ::el_set(editor, EL_CLIENTDATA, this);
  ::el_set(editor, EL_PROMPT, &LineEditor::prompt_of);
  ::el_set(editor, EL_EDITOR, "emacs");
  ::el_set(editor, EL_HIST, ::history, history_.get());
  ::el_set(editor, EL_SIGNAL, 0);  // signals come through the client's event loop
  ::el_set(editor, EL_GETCFN, &LineEditor::next_char_of);
  ::el_source(editor, nullptr);        // ~/.editrc: the user's own bindings (vi mode, ...)
  ::el_set(editor, EL_UNBUFFERED, 1);  // raw mode, prompt shown, one key per el_gets
}

LineEditor::~LineEditor() {
  EditLine* editor = editor_.get();
  ::el_set(editor, EL_UNBUFFERED, 0);  // back to the terminal's normal mode
  std::fflush(stdout);
  write_all("\r\x1b[K");  // take the prompt (and any half-typed line) off the screen
}

LineEditor& LineEditor::owner_of(EditLine* editor) {
  void* data = nullptr;
  ::el_get(editor, EL_CLIENTDATA, &data);
  return *static_cast<LineEditor*>(data);
}

char* LineEditor::prompt_of(EditLine* editor) {
  return owner_of(editor).prompt_.data();
}

int LineEditor::next_char_of(EditLine* editor, wchar_t* out) {
  return owner_of(editor).next_char(out);
}

bool LineEditor::fill() {
  char buffer[4096];
  while (true) {
    ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      input_ended_ = true;
      return false;
    }
    pending_.erase(0, pending_at_);
    pending_at_ = 0;
    pending_.append(buffer, static_cast<std::size_t>(n));
    return true;
  }
}

int LineEditor::next_char(wchar_t* out) {
  while (true) {
    if (pending_at_ == pending_.size() && !fill()) return 0;
    const char* at = pending_.data() + pending_at_;
    std::size_t left = pending_.size() - pending_at_;
    std::size_t used = std::mbrtowc(out, at, left, &decode_state_);
    if (used ==
        static_cast<std::size_t>(-2)) {  // a character split across reads: wait for the rest
      pending_at_ = pending_.size();
      continue;
    }
    if (used == static_cast<std::size_t>(-1)) {  // not valid in this encoding
      decode_state_ = {};
      *out = kReplacementChar;
      used = 1;
    }
    pending_at_ += used == 0 ? 1 : used;  // 0: a NUL byte
    return 1;
  }
}

void LineEditor::read_input() {
  if (finished_) return;
  if (!fill()) return end_of_input();
  while (!finished_ && pending_at_ < pending_.size()) {
    int count = 0;
    const char* text = ::el_gets(editor_.get(), &count);
    if (input_ended_) return end_of_input();
    if (text == nullptr || count <= 0) continue;  // an edit that left the line empty
    std::string_view line(text, static_cast<std::size_t>(count));
    if (line == "\x04") return end_of_input();  // Ctrl-D on an empty line
    if (line.back() != '\n' && line.back() != '\r') continue;
    std::string typed(line.substr(0, line.size() - 1));
    if (!typed.empty()) ::history(history_.get(), &event_, H_ENTER, typed.c_str());
    restart_line();
    on_line_(std::move(typed));  // last: the handler may destroy this editor
  }
}

void LineEditor::end_of_input() {
  finished_ = true;
  on_line_(std::nullopt);
}

void LineEditor::restart_line() {
  // Leaving and re-entering unbuffered mode clears the line and shows a fresh prompt, as
  // libedit's own readline emulation does between lines.
  ::el_set(editor_.get(), EL_UNBUFFERED, 0);
  ::el_set(editor_.get(), EL_UNBUFFERED, 1);
}

int LineEditor::rows_above_cursor() const {
  int columns = 0;
  if (::el_get(editor_.get(), EL_GETTC, "co", &columns, nullptr) != 0 || columns <= 0) return 0;
  const LineInfoW* line = ::el_wline(editor_.get());
  int width = static_cast<int>(prompt_.size());
  for (const wchar_t* c = line->buffer; c < line->cursor; ++c) {
    int cells = ::wcwidth(*c);
    width += cells < 0 ? 2 : cells;  // libedit shows control characters as ^X
  }
  return width / columns;
}

void LineEditor::print_above(std::string_view text) {
  if (text.empty()) return;
  std::string out = "\r";
  if (int rows = rows_above_cursor(); rows > 0) out += fmt::format("\x1b[{}A", rows);
  out += "\x1b[J";  // erase the prompt and the line being typed, to the end of the screen
  out += text;
  write_all(out);
  ::el_set(editor_.get(), EL_REFRESH);  // draw them again below what was printed
}

void LineEditor::resize() {
  ::el_resize(editor_.get());
  ::el_set(editor_.get(), EL_REFRESH);
}

}  // namespace mux
