// The chat line protocol as pure functions, shared by the server (single and fork mode) and the
// client: making a line safe for a terminal, recognising commands, checking nicks, and the exact
// text of every notice. Nothing here does I/O, so all of it is unit tested in-process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/sanitize.hpp"

namespace mux::chat {

inline constexpr std::size_t kMaxNickChars = 32;

// Chat text goes through the one sanitizer (core/base/sanitize.hpp): TAB and printable text pass;
// C0 controls and DEL become caret notation (ESC -> "^[", NUL -> "^@", DEL -> "^?"); C1 controls,
// bidi controls, invisible formatting characters and every ill-formed UTF-8 sequence become
// U+FFFD. When `cut` is set the line was cut mid-stream, so an incomplete sequence at its very
// end is dropped rather than replaced.
inline void append_sanitized(std::string& out, std::string_view raw, bool cut = false) {
  mux::append_sanitized(out, raw, cut, kTextStyle);
}
inline std::string sanitize(std::string_view raw, bool cut = false) {
  std::string out;
  append_sanitized(out, raw, cut);
  return out;
}

enum class CommandKind { message, nick, who, help, quit, cap, since, history, reclaim, unknown };

// What a line asks for. `text` is the message for `message` (with the escaping slash of "//"
// removed), the argument for `nick`, `cap`, `since` and `history`, the command word for `unknown`.
struct Command {
  CommandKind kind = CommandKind::message;
  std::string_view text;
};
Command parse_command(std::string_view line);

// Why `nick` cannot be a name, or nullopt when it can: 1 to 32 characters, printable, and no
// spaces or invisible characters (so nobody can pose as "Client 3" or hide a bidi override).
std::optional<std::string> nick_problem(std::string_view nick);
// The form two nicks are compared in for uniqueness: ASCII letters folded to lower case.
std::string fold_nick(std::string_view nick);

// Message ids (issue 23), for clients that ask with "/cap ids": each room line they receive is
// "@ID [NAME]: TEXT", ID counting the room's lines (as this server relays them) from 1 within an
// epoch, a token that changes whenever the room's history is lost (a server restart).
void append_relay_with_id(std::string& out, std::uint64_t id, std::string_view name,
                          std::string_view text);
// A "/since EPOCH ID" argument; nullopt when malformed.
struct Since {
  std::string_view epoch;
  std::uint64_t id = 0;
};
std::optional<Since> parse_since(std::string_view argument);
// A line with an id as a capable client receives it: the id and the rest ("[NAME]: TEXT").
struct IdLine {
  std::uint64_t id = 0;
  std::string_view rest;
};
std::optional<IdLine> parse_id_line(std::string_view line);
// The answer to "/cap ids": "* cap ids epoch=E last=ID max-line=N secret=S", S being the
// session's reconnect secret (empty from a server that sends none).
struct CapReply {
  std::string_view epoch;
  std::uint64_t last = 0;
  std::size_t max_line = 0;
  std::string_view secret;
};
std::optional<CapReply> parse_cap_reply(std::string_view line);
// A reconnect secret: kSecretChars lowercase hex digits (128 random bits), made by the server
// for each session that asks for ids; "/reclaim NICK SECRET" proves the sender is the session
// that held NICK.
inline constexpr std::size_t kSecretChars = 32;
[[nodiscard]] bool valid_secret(std::string_view secret);
// A fresh secret of that form from the kernel's CSPRNG (getrandom): the one call here that is
// not pure. Also chat-client's writer key (/cap acks WRITER).
[[nodiscard]] std::string make_secret();
// Compares two secrets in time independent of where they differ.
[[nodiscard]] bool same_secret(std::string_view a, std::string_view b);
// A "/reclaim NICK SECRET" argument; nullopt when malformed.
struct Reclaim {
  std::string_view nick;
  std::string_view secret;
};
std::optional<Reclaim> parse_reclaim(std::string_view argument);

// A typed line cut into pieces of at most `max_bytes` bytes each, never inside a UTF-8
// character; a piece after the first that starts with '/' gets the "//" escape (and is a byte
// shorter), so it stays a message. One piece when the line fits.
std::vector<std::string> split_line(std::string_view line, std::size_t max_bytes);

// Every line the server sends, formatted in one place. Each ends with '\n'.
namespace notice {
std::string relay(std::string_view name, std::string_view text);
// The same, appended in place: the relay path formats every line, so no temporary per line.
void append_relay(std::string& out, std::string_view name, std::string_view text);
std::string welcome(std::string_view name);
std::string joined(std::string_view name);
std::string left(std::string_view name, bool too_slow);
std::string renamed(std::string_view from, std::string_view to);
std::string who(const std::vector<std::string_view>& names);
// A big room's /who: `names` are the first of `total` ("* online (TOTAL, first N shown): ...").
std::string who_page(const std::vector<std::string_view>& names, std::size_t total);
// /who TEXT: `names` are the first of `total` members whose names contain `text`.
std::string who_matching(std::string_view text, const std::vector<std::string_view>& names,
                         std::size_t total);
std::string help();
std::string unknown_command(std::string_view command);
std::string nick_usage();
std::string nick_taken(std::string_view nick);
std::string nick_invalid(std::string_view nick, std::string_view problem);
std::string nick_unchanged(std::string_view nick);
std::string nick_look_alike(std::string_view nick, std::string_view other);
// Flow control: the first time a client goes over its line or byte rate, and when it kept on.
std::string slow_down(double line_rate, std::uint64_t byte_rate);
std::string excess_flood(std::uint64_t seconds);
// At most once a second while a client's commands are over the command rate.
std::string commands_ignored(double command_rate);
// A client whose first line is an upload header (mux upload-client pointed at chat-server).
std::string not_an_upload_server();
std::string line_cut(std::size_t max_line);
std::string server_full();
std::string cap_ids(std::string_view epoch, std::uint64_t last, std::size_t max_line,
                    std::string_view secret);
std::string reclaim_usage();
// To the connection whose nick a /reclaim with its secret took over (its ghost, or whoever
// stole the secret); it ends that session.
std::string replaced();
std::string cap_usage();
// The answer to "/cap acks", then one "* ack ID" per message the sender sent once it is stored
// (in a Redis room: numbered in Redis; ID 0 when it was relayed on this server only).
std::string cap_acks();
std::string ack(std::uint64_t id);
// "/cap acks WRITER" (WRITER: 32 hex digits the client made, kept by it across reconnects): the
// answer says how many of that writer's messages the room has stored ("* cap acks last=N"); the
// room numbers the messages sent on this connection from N + 1, and one it already stored (a
// resend whose first copy arrived after all) is not relayed again but confirmed "* ack again".
std::string cap_acks_numbered(std::uint64_t stored);
std::string ack_again();
std::string since_usage();
std::string history_usage();
std::string no_history();
// Lines a /since cannot replay: a known count, or an unknown one (the epoch changed).
std::string missed(std::uint64_t lines);
std::string missed_unknown();
// To members with ids when a Redis room's ids start again (Redis restarted empty).
std::string missed_ids_lost();
// To every member of a server whose link to Redis dropped, of the lines said meanwhile that it
// could not read back: lost with Redis (it restarted empty; the first server back counted how
// far that history went), or older than the room's history keeps (--history).
std::string missed_ids_lost(std::uint64_t lines);
std::string missed_trimmed(std::uint64_t lines);
std::string shutting_down();

// The reason in a notice after which a mux server ends the session ("server full", "excess
// flood: ...", "server shutting down"), without the leading "* " and the newline; nullopt for
// any other line. The chat client exits 1 with it: lines it sent may not have reached the room.
// Only the server writes lines starting "* " (a relay starts "["), so no member can fake one.
std::optional<std::string_view> session_end_reason(std::string_view line);
}  // namespace notice

}  // namespace mux::chat
