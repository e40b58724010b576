#include "chat/line_editor.hpp"

#include <langinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <cwctype>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr int kHistorySize = 1000;
constexpr wchar_t kReplacementChar = 0xFFFD;

// Characters a paste may insert directly: anything a key would insert as itself in emacs mode.
bool is_plain_text(wchar_t c) {
  if (c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0)) return false;
  return std::iswprint(static_cast<wint_t>(c)) != 0;
}

std::size_t utf8_characters(std::string_view text) {
  std::size_t count = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
  }
  return count;
}

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
  // Before ~/.editrc, so a user's own binding of Tab wins. The wide form: the narrow el_set
  // copies name and help with wcsdup and never frees them (LeakSanitizer fails every run);
  // libedit keeps these pointers, and literals live for ever.
  ::el_wset(editor, EL_ADDFN, L"mux-complete-nick", L"Complete the nick before the cursor",
            &LineEditor::complete_of);
  ::el_set(editor, EL_BIND, "^I", "mux-complete-nick", nullptr);
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
  int undrawn_from = -1;  // text went in without a redraw: the drawn cursor's rows above
  while (!finished_ && pending_at_ < pending_.size()) {
    if (insert_printable_run(undrawn_from)) continue;
    // Any other key goes through libedit, which draws only what changed since its last redraw.
    if (undrawn_from >= 0) redraw_from(std::exchange(undrawn_from, -1));
    int count = 0;
    const char* text = ::el_gets(editor_.get(), &count);
    if (input_ended_) return end_of_input();
    if (text == nullptr || count <= 0) continue;  // an edit that left the line empty
    std::string_view line(text, static_cast<std::size_t>(count));
    if (line == "\x04") return end_of_input();  // Ctrl-D on an empty line
    if (line.back() != '\n' && line.back() != '\r') continue;
    std::string typed(line.substr(0, line.size() - 1));
    if (!typed.empty()) ::history(history_.get(), &event_, H_ENTER, typed.c_str());
    erase_sent_line();
    restart_line();
    on_line_(std::move(typed));  // last: the handler may destroy this editor
  }
  if (undrawn_from >= 0 && !finished_) redraw_from(undrawn_from);
}

bool LineEditor::insert_printable_run(int& drawn_rows_above) {
  // In vi mode a printable key may be a command: every key goes through libedit there.
  const char* mode = nullptr;
  if (::el_get(editor_.get(), EL_EDITOR, &mode) != 0 || mode == nullptr ||
      std::strcmp(mode, "emacs") != 0)
    return false;
  std::wstring run;
  std::mbstate_t state = decode_state_;
  std::size_t at = pending_at_;
  while (at < pending_.size()) {
    wchar_t c = 0;
    std::size_t used = std::mbrtowc(&c, pending_.data() + at, pending_.size() - at, &state);
    // Split, invalid or NUL: next_char() deals with those, one at a time.
    if (used == 0 || used > pending_.size() - at || !is_plain_text(c)) break;
    run.push_back(c);
    at += used;
  }
  if (run.empty()) return false;
  int rows = rows_above_cursor();
  // -1: longer than libedit will hold; then key by key, as before, and libedit decides.
  if (::el_winsertstr(editor_.get(), run.c_str()) != 0) return false;
  if (drawn_rows_above < 0) drawn_rows_above = rows;
  pending_at_ = at;
  decode_state_ = state;
  return true;
}

void LineEditor::redraw_from(int rows_above) {
  // EL_REFRESH draws prompt and line from scratch where it believes the line starts: move there
  // and clear what was drawn before.
  std::string out = "\r";
  if (rows_above > 0) out += fmt::format("\x1b[{}A", rows_above);
  out += "\x1b[J";
  write_all(out);
  ::el_set(editor_.get(), EL_REFRESH);
}

void LineEditor::erase_sent_line() {
  // libedit has moved below the line just entered: take it (and its prompt) off the screen; the
  // owner shows what was sent as the room sees it.
  const LineInfoW* line = ::el_wline(editor_.get());
  const wchar_t* end = line->lastchar;
  while (end > line->buffer && (end[-1] == L'\n' || end[-1] == L'\r'))
    --end;
  int width = static_cast<int>(prompt_.size()) + cells(line->buffer, end);
  int rows = columns() > 0 ? width / columns() + 1 : 1;
  write_all(fmt::format("\x1b[{}A\r\x1b[J", rows));
}

unsigned char LineEditor::complete_of(EditLine* editor, int /*key*/) {
  return owner_of(editor).complete();
}

unsigned char LineEditor::complete() {
  if (!completer_) return CC_ERROR;
  const LineInfo* line = ::el_line(editor_.get());
  std::string_view before(line->buffer, static_cast<std::size_t>(line->cursor - line->buffer));
  chat::Completion completion = completer_(before);
  if (completion.insert.empty() && completion.choices.empty()) return CC_ERROR;  // a beep
  if (!completion.choices.empty()) {
    std::string listing;
    for (const std::string& choice : completion.choices)
      listing += fmt::format("{}{}", listing.empty() ? "" : "  ", choice);
    print_above(listing + "\n");
    return CC_NORM;  // print_above has drawn the line again
  }
  std::size_t replace = std::min(completion.replace_bytes, before.size());
  if (replace > 0)
    ::el_deletestr(editor_.get(),
                   static_cast<int>(utf8_characters(before.substr(before.size() - replace))));
  if (::el_insertstr(editor_.get(), completion.insert.c_str()) != 0) return CC_ERROR;
  return CC_REFRESH;
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

int LineEditor::columns() const {
  int columns = 0;
  if (::el_get(editor_.get(), EL_GETTC, "co", &columns, nullptr) != 0 || columns <= 0) return 0;
  return columns;
}

int LineEditor::cells(const wchar_t* begin, const wchar_t* end) const {
  int width = 0;
  for (const wchar_t* c = begin; c < end; ++c) {
    int cells = ::wcwidth(*c);
    width += cells < 0 ? 2 : cells;  // libedit shows control characters as ^X
  }
  return width;
}

int LineEditor::rows_above_cursor() const {
  int columns = this->columns();
  if (columns <= 0) return 0;
  const LineInfoW* line = ::el_wline(editor_.get());
  return (static_cast<int>(prompt_.size()) + cells(line->buffer, line->cursor)) / columns;
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
  // EL_REFRESH draws from where the line starts without clearing: clear first, or every resize
  // leaves another copy of prompt and draft. Rows are counted at the old width, as drawn (a
  // terminal that re-wraps lines on resize may keep a stray row; one that does not, none).
  int rows = rows_above_cursor();
  ::el_resize(editor_.get());
  redraw_from(rows);
}

}  // namespace mux
