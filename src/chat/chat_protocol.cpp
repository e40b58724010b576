#include "chat/chat_protocol.hpp"

#include <fmt/format.h>

#include <cstdint>

namespace mux::chat {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// One step of UTF-8 decoding. `length` is how many bytes were consumed: the whole sequence when
// `valid`, otherwise the maximal ill-formed subpart (at least 1 byte). `at_end` marks an
// ill-formed sequence that is only ill-formed because the input stopped in its middle.
struct Decoded {
  char32_t code_point = 0;
  std::size_t length = 1;
  bool valid = false;
  bool at_end = false;
};

// The range the second byte must fall in, by lead byte; later bytes are always 80..BF. This is
// Table 3-7 of the Unicode standard: it excludes overlongs, surrogates and values > U+10FFFF.
bool second_byte_ok(unsigned char lead, unsigned char byte) {
  if (lead == 0xE0) return byte >= 0xA0 && byte <= 0xBF;
  if (lead == 0xED) return byte >= 0x80 && byte <= 0x9F;
  if (lead == 0xF0) return byte >= 0x90 && byte <= 0xBF;
  if (lead == 0xF4) return byte >= 0x80 && byte <= 0x8F;
  return byte >= 0x80 && byte <= 0xBF;
}

Decoded decode(std::string_view text, std::size_t at) {
  auto lead = static_cast<unsigned char>(text[at]);
  if (lead < 0x80) return {lead, 1, true, false};
  std::size_t needed = 0;
  char32_t value = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 1;
    value = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 2;
    value = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 3;
    value = lead & 0x07u;
  } else {
    return {};  // a stray continuation byte, C0/C1 (overlong) or F5..FF: never valid
  }
  for (std::size_t i = 1; i <= needed; ++i) {
    if (at + i >= text.size()) return {0, i, false, true};
    auto byte = static_cast<unsigned char>(text[at + i]);
    bool ok = i == 1 ? second_byte_ok(lead, byte) : (byte >= 0x80 && byte <= 0xBF);
    if (!ok) return {0, i, false, false};
    value = (value << 6) | (byte & 0x3Fu);
  }
  return {value, needed + 1, true, false};
}

bool is_c1_control(char32_t c) {
  return c >= 0x80 && c <= 0x9F;
}

// Characters that print as nothing or as blank space, or reorder text: none of them belongs in a
// name people must be able to tell apart.
bool is_blank_or_invisible(char32_t c) {
  return c <= 0x20 || c == 0x7F || is_c1_control(c) || c == 0xA0 || c == 0xAD || c == 0x034F ||
         c == 0x061C || c == 0x115F || c == 0x1160 || c == 0x1680 || c == 0x180E ||
         (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
         (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0x3164 || c == 0xFEFF || c == 0xFFA0 ||
         (c >= 0xFFF0 && c <= 0xFFFD) || (c >= 0xE0000 && c <= 0xE0FFF);
}

bool is_plain_ascii(char c) {
  return c >= 0x20 && c < 0x7F;
}

}  // namespace

void append_sanitized(std::string& out, std::string_view raw, bool cut) {
  out.reserve(out.size() + raw.size());
  std::size_t at = 0;
  while (at < raw.size()) {
    // Fast path: most chat text is printable ASCII; copy runs of it at once.
    std::size_t run = at;
    while (run < raw.size() && is_plain_ascii(raw[run]))
      ++run;
    out.append(raw.substr(at, run - at));
    at = run;
    if (at == raw.size()) break;

    auto byte = static_cast<unsigned char>(raw[at]);
    if (byte == '\t') {
      out.push_back('\t');
      ++at;
      continue;
    }
    if (byte < 0x20 || byte == 0x7F) {
      out.push_back('^');
      out.push_back(static_cast<char>(byte ^ 0x40));
      ++at;
      continue;
    }
    Decoded decoded = decode(raw, at);
    if (decoded.valid && !is_c1_control(decoded.code_point)) {
      out.append(raw.substr(at, decoded.length));
    } else if (!(decoded.at_end && cut)) {
      out.append(kReplacement);
    }
    at += decoded.length;
  }
}

std::string sanitize(std::string_view raw, bool cut) {
  std::string out;
  append_sanitized(out, raw, cut);
  return out;
}

Command parse_command(std::string_view line) {
  if (line.empty() || line.front() != '/') return {CommandKind::message, line};
  if (line.size() > 1 && line[1] == '/') return {CommandKind::message, line.substr(1)};
  std::size_t word_end = line.find_first_of(" \t");
  std::string_view word = line.substr(0, word_end);
  std::string_view argument =
      word_end == std::string_view::npos ? std::string_view{} : line.substr(word_end);
  std::size_t first = argument.find_first_not_of(" \t");
  argument = first == std::string_view::npos ? std::string_view{} : argument.substr(first);
  argument = argument.substr(0, argument.find_last_not_of(" \t") + 1);

  std::string lowered = fold_nick(word);
  if (lowered == "/nick") return {CommandKind::nick, argument};
  if (lowered == "/who") return {CommandKind::who, {}};
  if (lowered == "/help") return {CommandKind::help, {}};
  if (lowered == "/quit") return {CommandKind::quit, {}};
  return {CommandKind::unknown, word};
}

std::optional<std::string> nick_problem(std::string_view nick) {
  if (nick.empty()) return "it is empty";
  std::size_t characters = 0;
  for (std::size_t at = 0; at < nick.size();) {
    Decoded decoded = decode(nick, at);
    if (!decoded.valid) return "it is not valid UTF-8";
    if (is_blank_or_invisible(decoded.code_point)) return "no spaces or invisible characters";
    if (++characters > kMaxNickChars)
      return fmt::format("longer than {} characters", kMaxNickChars);
    at += decoded.length;
  }
  return std::nullopt;
}

std::string fold_nick(std::string_view nick) {
  std::string folded(nick);
  for (char& c : folded) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return folded;
}

namespace notice {

std::string relay(std::string_view name, std::string_view text) {
  std::string line;
  append_relay(line, name, text);
  return line;
}
void append_relay(std::string& out, std::string_view name, std::string_view text) {
  out.reserve(out.size() + name.size() + text.size() + 5);
  out += '[';
  out += name;
  out += "]: ";
  out += text;
  out += '\n';
}
std::string welcome(std::string_view name) {
  return fmt::format("* welcome, you are {} (type /help for commands)\n", name);
}
std::string joined(std::string_view name) {
  return fmt::format("* {} joined\n", name);
}
std::string left(std::string_view name, bool too_slow) {
  return fmt::format("* {} left{}\n", name, too_slow ? " (too slow)" : "");
}
std::string renamed(std::string_view from, std::string_view to) {
  return fmt::format("* {} is now {}\n", from, to);
}
std::string who(const std::vector<std::string_view>& names) {
  return fmt::format("* online ({}): {}\n", names.size(), fmt::join(names, ", "));
}
std::string help() {
  return "* commands: /nick NAME (change your name), /who (who is here), /help, /quit (leave); "
         "any other line goes to everyone (start it with // to send a leading /)\n";
}
std::string unknown_command(std::string_view command) {
  return fmt::format("* unknown command {} (try /help)\n", command);
}
std::string nick_usage() {
  return "* usage: /nick NAME\n";
}
std::string nick_taken(std::string_view nick) {
  return fmt::format("* nick {} is taken\n", nick);
}
std::string nick_invalid(std::string_view nick, std::string_view problem) {
  return fmt::format("* invalid nick '{}': {}\n", nick, problem);
}
std::string nick_unchanged(std::string_view nick) {
  return fmt::format("* you are already {}\n", nick);
}
std::string line_cut(std::size_t max_line) {
  return fmt::format("* line too long: cut at {} bytes, the rest was dropped\n", max_line);
}
std::string server_full() {
  return "* server full\n";
}
std::string shutting_down() {
  return "* server shutting down\n";
}

}  // namespace notice
}  // namespace mux::chat
