#include "chat/room_history.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <random>
#include <utility>

#include "chat/chat_protocol.hpp"

namespace mux {
namespace {
std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string make_epoch() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}
}  // namespace

RoomHistory::RoomHistory() : epoch_(make_epoch()) {}

std::uint64_t RoomHistory::number(std::uint64_t room_id) {
  if (!room_ids_) return ++last_id_;                  // this server numbers its room
  if (room_id > last_id_) return last_id_ = room_id;  // numbered by Redis
  return 0;
}

bool RoomHistory::numbered_later(std::uint64_t id) {
  if (id <= last_id_) return false;
  last_id_ = id;
  return true;
}

void RoomHistory::remember(std::string_view name, std::string_view text, std::uint64_t id) {
  if (limit_ == 0) return;
  kept_.push_back({unix_now(), std::string(name), std::string(text), id});
  while (kept_.size() > limit_)
    kept_.pop_front();
}

RoomHistory::EpochChange RoomHistory::start_epoch(const std::string& epoch, std::uint64_t last) {
  bool first = !std::exchange(room_ids_, true);
  if (epoch == epoch_) return EpochChange::same;
  epoch_ = epoch;
  last_id_ = last;
  for (HistoryEntry& entry : kept_)
    entry.id = 0;  // ids of another epoch: still shown by /history, never replayed by id
  return first ? EpochChange::first : EpochChange::lost;
}

std::uint64_t RoomHistory::first_kept_id() const {
  for (const HistoryEntry& entry : kept_) {
    if (entry.id != 0) return entry.id;
  }
  return last_id_ + 1;
}

std::vector<HistoryEntry> RoomHistory::last(std::uint64_t count) const {
  std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(count, kept_.size()));
  return {kept_.end() - static_cast<std::ptrdiff_t>(take), kept_.end()};
}

std::string RoomHistory::replay(std::string_view asker, std::uint64_t after, std::uint64_t up_to,
                                const std::optional<std::vector<HistoryEntry>>& stream,
                                bool other_epoch) const {
  std::string lines;
  std::uint64_t missed = 0;
  std::uint64_t next = after + 1;  // the first id it has not seen
  if (up_to != 0) {
    // From the stream: (after, up_to], the newest --history of them.
    if (stream) {
      bool first = true;
      for (const HistoryEntry& entry : *stream) {
        if (entry.id < next || entry.id > up_to) continue;
        // Before the oldest kept: trimmed (MAXLEN) or lost. Gaps after it are lines the room
        // dropped (a flood, an empty line), never missed ones.
        if (std::exchange(first, false) && entry.id > next) missed += entry.id - next;
        // Its own lines are not sent back to it, as live.
        if (entry.name != asker)
          chat::append_relay_with_id(lines, entry.id, entry.name, entry.text);
        next = entry.id + 1;
      }
    }
    if (next <= up_to) missed += up_to + 1 - next;  // what the stream no longer (or never) had
    next = up_to + 1;
  }
  if (after < last_id_ && !other_epoch) {
    // From memory: what it kept from `next` on (its oldest may be newer, after a round trip).
    std::uint64_t first_kept = first_kept_id();
    if (next < first_kept) missed += first_kept - next;
  }
  for (const HistoryEntry& entry : kept_) {
    if (entry.id >= next && entry.id > after && entry.name != asker)
      chat::append_relay_with_id(lines, entry.id, entry.name, entry.text);
  }
  std::string out;
  if (other_epoch) {
    // Another epoch: what it saw is gone from here; everything kept since the restart is new.
    out += chat::notice::missed_unknown();
  } else if (missed != 0) {
    out += chat::notice::missed(missed);
  }
  out += lines;
  return out;
}

std::string RoomHistory::format(const std::vector<HistoryEntry>& history) {
  std::string out;
  for (const HistoryEntry& entry : history) {
    auto seconds = static_cast<std::time_t>(entry.unix_seconds);
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &utc);
    out += '[';
    out += stamp;
    out += "] ";
    chat::notice::append_relay(out, entry.name, entry.text);
  }
  return out;
}

}  // namespace mux
