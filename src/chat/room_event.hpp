// RoomEvent: what happens in a chat room, as data (a message, a join, a leave, a rename), and the
// wire format that carries a batch of them between chat-servers sharing a room (through Redis
// pub/sub, see chat/redis_room_bus.hpp). Pure functions, no I/O; unit tested and fuzzable.
//
// Wire format (one Redis message), length-prefixed so no byte of a nick or text can break it:
//   MUXROOM1 <server-id>\n            server-id: 1 to 64 of [0-9A-Za-z._-]
//   then per event: <kind> <len>:<bytes> <len>:<bytes> <len>:<bytes>\n
//     m  name, text, ""          a message
//     j  name, "", ""            joined
//     l  name, reason, "0"|"1"   left; "1" when it was disconnected for being too slow
//     r  old name, new name, reason
//     v  "", version, ""         the sender's member-set version after this batch's j, l and r
//                                events (at most one per batch; see chat/redis_room_bus.hpp)
//     s  "", sequence, tag       with --room-secret-file: the sender's batch sequence number
//                                (strictly rising per server) and the HMAC tag of everything
//                                before this line with it (core/access/message_mac.hpp); at most
//                                one, and only an "i" line may follow it
//     i  "", first id, epoch     the room-wide id of the batch's first m event (the others
//                                count on from it, in order) and the room's epoch; appended by
//                                the Redis script that numbers the batch (at most one)
//     k  nick, owner, verifier   a reconnecting session took NICK back from its ghost on server
//                                OWNER (a server id) with the session's secret; VERIFIER (64 hex)
//                                is SHA-256 of a label and that secret, which OWNER checks against
//                                the ghost's own secret before it ends the ghost (issue 23)
// Lengths are decimal without leading zeros, at most kMaxFieldBytes; the fields shown "" are
// empty. A message that breaks any rule is dropped whole (fuzzed: tests/fuzz/room_event.cpp).
// Names and texts are peer input from another machine: decode_room_events sanitizes texts with
// the chat sanitizer and refuses names that are not a valid nick or "Client N".
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mux::chat {

enum class RoomEventKind : char { message = 'm', joined = 'j', left = 'l', renamed = 'r' };

struct RoomEvent {
  RoomEventKind kind = RoomEventKind::message;
  std::string name;    // who (the old name for renamed)
  std::string text;    // the message, the reason (left), or the new name (renamed)
  std::string reason;  // renamed: why (empty for /nick)
  bool too_slow = false;
  std::uint64_t id = 0;  // a message's room-wide id (from the batch's "i" line); 0: none
};

// A "k" line: NICK taken back from its ghost on server `owner`, proven by `verifier`.
struct NickReclaim {
  std::string nick;
  std::string owner;
  std::string verifier;
};

struct RoomBatch {
  std::string server_id;
  std::vector<RoomEvent> events;
  std::vector<NickReclaim> reclaims;
  // From a "v" line: each j, l and r event counted one version, so the batch's first membership
  // event is version members_version - (their count) + 1.
  std::optional<std::uint64_t> members_version;
  // From an "i" line: the room's epoch and the first id (the messages' ids count on from it).
  std::string epoch;
  std::optional<std::uint64_t> first_id;
  // From an "s" line: the sequence number, the tag, and the payload bytes before the line (what
  // the tag covers, with the sequence number).
  std::optional<std::uint64_t> sequence;
  std::string tag;
  std::size_t signed_bytes = 0;
};

inline constexpr std::size_t kMaxFieldBytes = 64 * 1024;
inline constexpr std::size_t kMaxServerIdBytes = 64;
inline constexpr std::size_t kVerifierChars = 64;  // a SHA-256 in hex

[[nodiscard]] bool valid_server_id(std::string_view id);
// Appends the header when `out` is empty, then the event.
void encode_room_event(std::string& out, std::string_view server_id, const RoomEvent& event);
// Appends the header when `out` is empty, then a "v" line.
void encode_members_version(std::string& out, std::string_view server_id, std::uint64_t version);
// Appends an "s" line: `tag` covers `out` as it is now and `sequence`.
void encode_signature(std::string& out, std::uint64_t sequence, std::string_view tag);
// Appends the header when `out` is empty, then a "k" line.
void encode_reclaim(std::string& out, std::string_view server_id, const NickReclaim& reclaim);
// Appends an "i" line (what the Redis script appends to a batch it numbered); for tests.
void encode_ids(std::string& out, std::uint64_t first_id, std::string_view epoch);
// Nullopt when the payload is malformed; texts are cut at `max_text` bytes.
std::optional<RoomBatch> decode_room_events(std::string_view payload, std::size_t max_text);
// A name another server may use: a valid nick or "Client N".
[[nodiscard]] bool acceptable_remote_name(std::string_view name);
// N of a well-formed "Client N" (no leading zero, N > 0); nullopt for any other name.
[[nodiscard]] std::optional<std::uint64_t> default_name_number(std::string_view name);

}  // namespace mux::chat
