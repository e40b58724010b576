// RoomHistory: what the room remembers of its messages and how it numbers them (issue 23). It
// keeps the last --history messages, oldest first, with the ids they were relayed with; it holds
// the room's epoch and the last id relayed, counted here or (once the bus said the room's epoch)
// taken from Redis; it formats /history and builds the answer to /since. No I/O: the room
// decides who hears what, and reads the stream through the bus when memory is not enough.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/room_bus.hpp"

namespace mux {

class RoomHistory {
 public:
  // How the room's epoch changed when the bus said it (RoomEvents::room_epoch).
  enum class EpochChange {
    same,   // this room's already
    first,  // the first the bus said: ids continue the room's, nothing was lost
    lost,   // Redis lost the room's ids: the history a client counted is gone
  };

  // A fresh epoch: 16 random hex digits, different for every room and every start.
  RoomHistory();
  explicit RoomHistory(std::string epoch) : epoch_(std::move(epoch)) {}

  // --history N: the last N messages are kept (0: none).
  void set_limit(std::size_t limit) { limit_ = limit; }
  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }
  [[nodiscard]] const std::string& epoch() const noexcept { return epoch_; }
  [[nodiscard]] std::uint64_t last_id() const noexcept { return last_id_; }
  // The bus said the room's epoch: ids come from Redis, the same on every server.
  [[nodiscard]] bool room_ids() const noexcept { return room_ids_; }

  // The id of a message relayed now: the next of this server's count, or `room_id` (numbered by
  // Redis) when it is newer than the last; 0 (none) for an older or missing room id.
  std::uint64_t number(std::uint64_t room_id);
  // A local message came back from Redis with `id`: true (and the last id moves there) when it
  // is newer than the last one relayed here.
  bool numbered_later(std::uint64_t id);
  // Keeps a message (when --history is on), dropping the oldest beyond the limit.
  void remember(std::string_view name, std::string_view text, std::uint64_t id);
  EpochChange start_epoch(const std::string& epoch, std::uint64_t last);

  // The id of the oldest message kept with an id (last_id() + 1 when none).
  [[nodiscard]] std::uint64_t first_kept_id() const;
  [[nodiscard]] std::vector<HistoryEntry> all() const { return {kept_.begin(), kept_.end()}; }
  // The last `count` messages kept (fewer when fewer are kept), oldest first.
  [[nodiscard]] std::vector<HistoryEntry> last(std::uint64_t count) const;

  // The answer to /since for a client called `asker` that saw ids up to `after`: what may be
  // missing, then the lines after it with their ids, never its own. With `up_to` (non-zero),
  // (after, up_to] comes from `stream` (the room's stream in Redis, or nullopt when it could not
  // be read), the rest from memory. `other_epoch`: the client counted in another epoch.
  [[nodiscard]] std::string replay(std::string_view asker, std::uint64_t after, std::uint64_t up_to,
                                   const std::optional<std::vector<HistoryEntry>>& stream,
                                   bool other_epoch) const;

  // Replayed history: each line marked with when it was said (UTC), so it cannot pass for live.
  [[nodiscard]] static std::string format(const std::vector<HistoryEntry>& history);

 private:
  std::size_t limit_ = 0;
  std::deque<HistoryEntry> kept_;  // the last limit_ messages, oldest first
  std::string epoch_;
  std::uint64_t last_id_ = 0;  // the id of the last message relayed here
  bool room_ids_ = false;
};

}  // namespace mux
