#include "chat/chat_protocol.hpp"

#include <sys/random.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <iterator>
#include <system_error>

#include "core/base/sanitize.hpp"
#include "core/base/units.hpp"

namespace mux::chat {
namespace {

// Characters that print as nothing or as blank space, or reorder text: none of them belongs in a
// name people must be able to tell apart.
bool is_blank_or_invisible(char32_t c) {
  return c <= 0x20 || c == 0x7F || is_c1_control(c) || is_bidi_control(c) ||
         is_invisible_format(c) || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200F) ||
         (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F) || c == 0x3000 ||
         (c >= 0xFE00 && c <= 0xFE0F) || (c >= 0xFFF0 && c <= 0xFFFD) ||
         (c >= 0xE0000 && c <= 0xE0FFF);
}

}  // namespace

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
  if (lowered == "/who") return {CommandKind::who, argument};
  if (lowered == "/help") return {CommandKind::help, {}};
  if (lowered == "/quit") return {CommandKind::quit, {}};
  if (lowered == "/cap") return {CommandKind::cap, argument};
  if (lowered == "/since") return {CommandKind::since, argument};
  if (lowered == "/history") return {CommandKind::history, argument};
  if (lowered == "/reclaim") return {CommandKind::reclaim, argument};
  return {CommandKind::unknown, word};
}

std::optional<std::string> nick_problem(std::string_view nick) {
  if (nick.empty()) return "it is empty";
  std::size_t characters = 0;
  for (std::size_t at = 0; at < nick.size();) {
    Utf8Step step = decode_utf8(nick, at);
    if (!step.valid) return "it is not valid UTF-8";
    if (is_blank_or_invisible(step.code_point)) return "no spaces or invisible characters";
    if (++characters > kMaxNickChars)
      return fmt::format("longer than {} characters", kMaxNickChars);
    at += step.length;
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

namespace {
std::optional<std::uint64_t> parse_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}
bool valid_epoch(std::string_view epoch) {
  return !epoch.empty() && epoch.size() <= 32 &&
         epoch.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}
}  // namespace

void append_relay_with_id(std::string& out, std::uint64_t id, std::string_view name,
                          std::string_view text) {
  out += '@';
  out += fmt::format_int(id).str();
  out += ' ';
  notice::append_relay(out, name, text);
}

std::vector<std::string> split_line(std::string_view line, std::size_t max_bytes) {
  if (line.size() <= max_bytes || max_bytes < 8) return {std::string(line)};
  std::vector<std::string> pieces;
  bool first = true;
  while (!line.empty()) {
    bool escape = !first && line.front() == '/';
    std::size_t room = max_bytes - (escape ? 1 : 0);
    std::size_t take = std::min(room, line.size());
    // Back off to a character boundary: never split before a UTF-8 continuation byte.
    if (take < line.size()) {
      std::size_t at = take;
      while (at > 0 && (static_cast<unsigned char>(line[at]) & 0xC0) == 0x80)
        --at;
      if (at > 0) take = at;
    }
    std::string piece = escape ? "/" : "";
    piece += line.substr(0, take);
    pieces.push_back(std::move(piece));
    line.remove_prefix(take);
    first = false;
  }
  return pieces;
}

std::optional<Since> parse_since(std::string_view argument) {
  std::size_t space = argument.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  Since since{argument.substr(0, space), 0};
  auto id = parse_number(argument.substr(space + 1));
  if (!id || !valid_epoch(since.epoch)) return std::nullopt;
  since.id = *id;
  return since;
}

std::optional<IdLine> parse_id_line(std::string_view line) {
  if (line.size() < 3 || line.front() != '@') return std::nullopt;
  std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto id = parse_number(line.substr(1, space - 1));
  if (!id || !line.substr(space + 1).starts_with('[')) return std::nullopt;
  return IdLine{*id, line.substr(space + 1)};
}

std::optional<CapReply> parse_cap_reply(std::string_view line) {
  constexpr std::string_view kStart = "* cap ids epoch=";
  if (!line.starts_with(kStart)) return std::nullopt;
  line.remove_prefix(kStart.size());
  CapReply reply;
  std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  reply.epoch = line.substr(0, space);
  line.remove_prefix(space + 1);
  if (!line.starts_with("last=")) return std::nullopt;
  line.remove_prefix(5);
  space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto last = parse_number(line.substr(0, space));
  line.remove_prefix(space + 1);
  if (!line.starts_with("max-line=")) return std::nullopt;
  line.remove_prefix(9);
  space = line.find(' ');
  auto max_line = parse_number(line.substr(0, space));
  if (space != std::string_view::npos) {
    line.remove_prefix(space + 1);
    if (!line.starts_with("secret=") || !valid_secret(line.substr(7))) return std::nullopt;
    reply.secret = line.substr(7);
  }
  if (!last || !max_line || !valid_epoch(reply.epoch)) return std::nullopt;
  reply.last = *last;
  reply.max_line = static_cast<std::size_t>(*max_line);
  return reply;
}

std::string make_secret() {
  std::array<unsigned char, kSecretChars / 2> bytes{};
  std::size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "getrandom");
    got += static_cast<std::size_t>(n);
  }
  std::string hex;
  for (unsigned char byte : bytes)
    fmt::format_to(std::back_inserter(hex), "{:02x}", byte);
  return hex;
}

bool valid_secret(std::string_view secret) {
  return secret.size() == kSecretChars && std::all_of(secret.begin(), secret.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    differ |= static_cast<unsigned char>(a[i] ^ b[i]);
  return differ == 0;
}

std::optional<Reclaim> parse_reclaim(std::string_view argument) {
  std::size_t space = argument.find_first_of(" \t");
  if (space == std::string_view::npos) return std::nullopt;
  Reclaim reclaim{argument.substr(0, space), argument.substr(space + 1)};
  std::size_t first = reclaim.secret.find_first_not_of(" \t");
  if (first == std::string_view::npos) return std::nullopt;
  reclaim.secret.remove_prefix(first);
  if (reclaim.nick.empty() || reclaim.secret.find_first_of(" \t") != std::string_view::npos)
    return std::nullopt;
  return reclaim;
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
std::string who_page(const std::vector<std::string_view>& names, std::size_t total) {
  if (names.size() >= total) return who(names);
  return fmt::format("* online ({}, first {} shown; /who TEXT finds names): {}\n", total,
                     names.size(), fmt::join(names, ", "));
}
std::string who_matching(std::string_view text, const std::vector<std::string_view>& names,
                         std::size_t total) {
  if (total == 0) return fmt::format("* nobody online has \"{}\" in their name\n", text);
  if (names.size() >= total)
    return fmt::format("* online with \"{}\" ({}): {}\n", text, total, fmt::join(names, ", "));
  return fmt::format("* online with \"{}\" ({}, first {} shown): {}\n", text, total, names.size(),
                     fmt::join(names, ", "));
}
std::string help() {
  return "* commands: /nick NAME (change your name), /who (who is here; /who TEXT: whose name "
         "has TEXT), /history N (the last N lines), /help, /quit (leave); any other line goes to "
         "everyone (start it with // to send a leading /)\n";
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
std::string nick_look_alike(std::string_view nick, std::string_view other) {
  return fmt::format("* nick {} looks too much like {}, who is here\n", nick, other);
}
std::string slow_down(double line_rate, std::uint64_t byte_rate) {
  return fmt::format(
      "* slow down: you send more than {:g} lines or {} per second; reading you more slowly\n",
      line_rate, format_bytes(byte_rate));
}
std::string excess_flood(std::uint64_t seconds) {
  return fmt::format("* excess flood: too fast for {} s, disconnected\n", seconds);
}
std::string commands_ignored(double command_rate) {
  return fmt::format("* slow down: at most {:g} commands per second; commands ignored\n",
                     command_rate);
}
std::string not_an_upload_server() {
  return "* this is a chat server, not an upload server: upload refused\n";
}
std::string line_cut(std::size_t max_line) {
  return fmt::format("* line too long: cut at {} bytes, the rest was dropped\n", max_line);
}
std::string cap_ids(std::string_view epoch, std::uint64_t last, std::size_t max_line,
                    std::string_view secret) {
  return fmt::format("* cap ids epoch={} last={} max-line={} secret={}\n", epoch, last, max_line,
                     secret);
}
std::string reclaim_usage() {
  return "* usage: /reclaim NICK SECRET\n";
}
std::string replaced() {
  return "* replaced by a new connection with this session's secret\n";
}
std::string cap_usage() {
  return "* usage: /cap ids | /cap acks [WRITER]\n";
}
std::string cap_acks() {
  return "* cap acks\n";
}
std::string cap_acks_numbered(std::uint64_t stored) {
  return fmt::format("* cap acks last={}\n", stored);
}
std::string ack_again() {
  return "* ack again\n";
}
std::string ack(std::uint64_t id) {
  return fmt::format("* ack {}\n", id);
}
std::string since_usage() {
  return "* usage: /since EPOCH ID\n";
}
std::string history_usage() {
  return "* usage: /history N\n";
}
std::string no_history() {
  return "* no history is kept here (the server runs without --history)\n";
}
std::string missed(std::uint64_t lines) {
  return fmt::format("* {} line{} may have been missed\n", lines, lines == 1 ? "" : "s");
}
std::string missed_unknown() {
  return "* lines may have been missed: the room's history was lost (a server restart)\n";
}
std::string missed_ids_lost() {
  return "* lines may have been missed: the room's history was lost (Redis restarted empty)\n";
}
std::string missed_ids_lost(std::uint64_t lines) {
  return fmt::format(
      "* {} line{} may have been missed: the room's history was lost (Redis restarted empty)\n",
      lines, lines == 1 ? "" : "s");
}
std::string missed_trimmed(std::uint64_t lines) {
  return fmt::format("* {} line{} may have been missed: the room's history no longer had them\n",
                     lines, lines == 1 ? "" : "s");
}
std::string server_full() {
  return "* server full\n";
}
std::string shutting_down() {
  return "* server shutting down\n";
}

std::optional<std::string_view> session_end_reason(std::string_view line) {
  // Whole lines, or a fixed start followed by ": " and details; never a bare prefix, so that
  // "* server fullness left" (a member's nick) is not taken for a refusal. The refusals a
  // listener sends are written in chat_server.cpp.
  static constexpr std::string_view kWholeLines[] = {
      "* server full",
      "* not allowed",
      "* server shutting down",
      "* unauthorized",  // chat/chat_access.hpp: a wrong or missing /token line
      "* this is a chat server, not an upload server: upload refused",
      "* replaced by a new connection with this session's secret",
  };
  static constexpr std::string_view kStarts[] = {"* server full: ", "* excess flood: "};
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  for (std::string_view whole : kWholeLines) {
    if (line == whole) return line.substr(2);
  }
  for (std::string_view start : kStarts) {
    if (line.starts_with(start)) return line.substr(2);
  }
  return std::nullopt;
}

}  // namespace notice
}  // namespace mux::chat
