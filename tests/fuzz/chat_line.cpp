// Chat text from a peer: what the sanitizer lets through, how a line is read as a command, which
// nicks are accepted and how a relay line is built from them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "core/base/sanitize.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::chat_line {
namespace {

bool is_c0_or_del(char32_t c) {
  return (c < 0x20 && c != '\t') || c == 0x7F;
}
bool is_c1(char32_t c) {
  return c >= 0x80 && c <= 0x9F;
}
// Characters that reorder text on screen (Unicode bidi controls).
bool is_bidi_control(char32_t c) {
  return c == 0x061C || c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2066 && c <= 0x2069);
}

// Valid UTF-8 whose every character a terminal shows as text (TAB included): no controls, no
// bidi controls, nothing invisible (the sanitizer's list of invisible formatting characters).
bool is_terminal_safe(std::string_view text) {
  bool safe = true;
  bool valid = for_each_code_point(text, [&safe](char32_t c) {
    if (is_c0_or_del(c) || is_c1(c) || is_bidi_control(c) || mux::is_invisible_format(c))
      safe = false;
  });
  return valid && safe;
}

void check_sanitizer(std::string_view raw, bool cut) {
  std::string clean = chat::sanitize(raw, cut);
  FUZZ_CHECK(is_valid_utf8(clean), printable(clean));
  FUZZ_CHECK(is_terminal_safe(clean), printable(clean));
  // Sanitized text is a fixed point: sanitizing twice changes nothing.
  FUZZ_CHECK(chat::sanitize(clean) == clean, printable(clean));
  // Text that is already safe passes untouched.
  if (is_terminal_safe(raw)) FUZZ_CHECK(clean == raw, printable(raw));
  // Appending keeps what is already in the buffer.
  std::string appended = "prefix:";
  chat::append_sanitized(appended, raw, cut);
  FUZZ_CHECK(appended == "prefix:" + clean, printable(appended));
  // One relay line: exactly one '\n', at its end.
  std::string relay = chat::notice::relay("nick", clean);
  FUZZ_CHECK(relay == "[nick]: " + clean + "\n", printable(relay));
  FUZZ_CHECK(relay.find('\n') == relay.size() - 1, printable(relay));
}

// The same sanitizer in its other uses: file names a peer chose, and fields in log lines.
void check_other_styles(std::string_view raw) {
  std::string name = mux::sanitized(raw, mux::kFileNameStyle);
  FUZZ_CHECK(is_terminal_safe(name), printable(name));
  FUZZ_CHECK(name.find('\t') == std::string::npos, printable(name));
  FUZZ_CHECK(mux::sanitized(name, mux::kFileNameStyle) == name, printable(name));
  std::string field = mux::log_field(raw, 40);
  FUZZ_CHECK(is_terminal_safe(field), printable(field));
  FUZZ_CHECK(field.size() <= 40 + 3, printable(field));
}

bool contains(std::string_view outer, std::string_view inner) {
  return inner.empty() || (inner.data() >= outer.data() &&
                           inner.data() + inner.size() <= outer.data() + outer.size());
}

void check_command(std::string_view line) {
  chat::Command command = chat::parse_command(line);
  FUZZ_CHECK(contains(line, command.text), "the command's text is a view into the line");
  if (line.empty() || line.front() != '/') {
    FUZZ_CHECK(command.kind == chat::CommandKind::message && command.text == line, printable(line));
    return;
  }
  if (line.size() > 1 && line[1] == '/') {
    FUZZ_CHECK(command.kind == chat::CommandKind::message && command.text == line.substr(1),
               printable(line));
    return;
  }
  std::string_view word = line.substr(0, line.find_first_of(" \t"));
  std::string folded = chat::fold_nick(word);
  switch (command.kind) {
    case chat::CommandKind::message:
      FUZZ_CHECK(false, "a line starting with one '/' is a command: " + printable(line));
      break;
    case chat::CommandKind::nick:
      FUZZ_CHECK(folded == "/nick", printable(line));
      FUZZ_CHECK(
          command.text.empty() || (command.text.front() != ' ' && command.text.front() != '\t' &&
                                   command.text.back() != ' ' && command.text.back() != '\t'),
          printable(command.text));
      break;
    case chat::CommandKind::who:
      FUZZ_CHECK(folded == "/who", printable(line));
      break;
    case chat::CommandKind::help:
      FUZZ_CHECK(folded == "/help", printable(line));
      break;
    case chat::CommandKind::quit:
      FUZZ_CHECK(folded == "/quit", printable(line));
      break;
    case chat::CommandKind::cap:
      FUZZ_CHECK(folded == "/cap", printable(line));
      break;
    case chat::CommandKind::since:
      FUZZ_CHECK(folded == "/since", printable(line));
      break;
    case chat::CommandKind::history:
      FUZZ_CHECK(folded == "/history", printable(line));
      break;
    case chat::CommandKind::reclaim: {
      FUZZ_CHECK(folded == "/reclaim", printable(line));
      // A parsed reclaim is a nick and one word, neither empty nor holding blanks.
      if (auto reclaim = chat::parse_reclaim(command.text)) {
        FUZZ_CHECK(!reclaim->nick.empty() && !reclaim->secret.empty() &&
                       reclaim->nick.find_first_of(" \t") == std::string_view::npos &&
                       reclaim->secret.find_first_of(" \t") == std::string_view::npos,
                   printable(line));
      }
      break;
    }
    case chat::CommandKind::unknown:
      FUZZ_CHECK(command.text == word && folded != "/nick" && folded != "/who" &&
                     folded != "/help" && folded != "/quit" && folded != "/cap" &&
                     folded != "/since" && folded != "/history" && folded != "/reclaim",
                 printable(line));
      break;
  }
}

void check_nick(std::string_view nick) {
  std::optional<std::string> problem = chat::nick_problem(nick);
  std::string folded = chat::fold_nick(nick);
  FUZZ_CHECK(folded.size() == nick.size(), printable(nick));
  FUZZ_CHECK(chat::fold_nick(folded) == folded, printable(nick));
  if (problem) {
    FUZZ_CHECK(!problem->empty(), "a refusal says why");
    return;
  }
  // Accepted: 1..kMaxNickChars characters, none of them blank, invisible or a control, so it
  // reads the same wherever it is shown and cannot pose as another name.
  std::size_t characters = 0;
  bool visible = true;
  bool valid = for_each_code_point(nick, [&](char32_t c) {
    ++characters;
    if (c <= 0x20 || c == 0x7F || is_c1(c) || is_bidi_control(c) || c == 0xA0 || c == 0xAD ||
        (c >= 0x2000 && c <= 0x200F) || c == 0x3000 || c == 0xFEFF)
      visible = false;
  });
  FUZZ_CHECK(valid && visible, printable(nick));
  FUZZ_CHECK(characters >= 1 && characters <= chat::kMaxNickChars, printable(nick));
  FUZZ_CHECK(chat::sanitize(nick) == nick, printable(nick));
  // Case folding never turns an accepted nick into a refused one.
  FUZZ_CHECK(!chat::nick_problem(folded), printable(folded));
}

}  // namespace

// Layout: one flags byte (bit 0: the line was cut at --max-line), then the line.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  bool cut = (input.take_byte() & 1u) != 0;
  std::string_view line = input.take_rest();
  check_sanitizer(line, cut);
  check_other_styles(line);
  check_command(line);
  check_nick(line);
  // What the server actually does: parse the sanitized line.
  std::string clean = chat::sanitize(line, cut);
  check_command(clean);
  chat::Command command = chat::parse_command(clean);
  if (command.kind == chat::CommandKind::nick) check_nick(command.text);
}

}  // namespace mux::fuzz::chat_line
