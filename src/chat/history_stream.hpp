// The reading side of a Redis room's shared history: the stream mux:room:<NAME>:history, where
// kPublishScript (chat/redis_room_scripts.hpp) adds each message under its room-wide id as
// "0-ID" with fields t (unix seconds), n (name), m (text), o (the id of the server that said it)
// and, with --room-secret-file, s (nonce and tag). A newcomer reads the newest --history of it,
// /since on any server a range of ids, and a server whose link to Redis dropped what it missed
// meanwhile (kEpochScript). Everything in it was written by another server or by anyone with
// access to Redis, so it is read as peer input: an entry is kept only when it verifies
// (RoomSigner), has an acceptable name and a non-empty text once sanitized and cut at the line
// limit. No I/O: the bus sends the commands built here and hands the answers back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chat/room_bus.hpp"

namespace mux {

struct RedisValue;
class RoomSigner;

namespace history_stream {

// XREVRANGE of the newest `count` entries of `stream`.
[[nodiscard]] std::vector<std::string> newest(const std::string& stream, std::size_t count);
// XREVRANGE of the newest `count` entries with ids in (after, up_to] (the stream may hold a few
// more than --history: MAXLEN ~).
[[nodiscard]] std::vector<std::string> range(const std::string& stream, std::uint64_t after,
                                             std::uint64_t up_to, std::size_t count);

// The entries of an XREVRANGE answer (newest first), oldest first. With `ids_rising`, only
// entries with an id, each id above the one before (a /since replay: anything else did not come
// from kPublishScript).
[[nodiscard]] std::vector<HistoryEntry> entries(const RedisValue& reply, RoomSigner& signer,
                                                std::size_t max_line, bool ids_rising);

// A message a server missed while its link to Redis was down (read by kEpochScript), and
// whether that server said it itself (the entry's field o is its id): its own clients had it
// at once.
struct MissedEntry {
  HistoryEntry entry;
  bool own = false;
};
// entries(reply, ..., true), each with whether server `self` said it.
[[nodiscard]] std::vector<MissedEntry> missed(const RedisValue& reply, RoomSigner& signer,
                                              std::size_t max_line, std::string_view self);

}  // namespace history_stream
}  // namespace mux
