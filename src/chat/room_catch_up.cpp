#include "chat/room_catch_up.hpp"

#include <charconv>
#include <system_error>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "core/base/logger.hpp"

namespace mux {

std::uint64_t last_id_before(const std::vector<chat::RoomEvent>& events) {
  for (const chat::RoomEvent& event : events) {
    if (event.kind == chat::RoomEventKind::message && event.id != 0) return event.id - 1;
  }
  return 0;
}

std::optional<std::uint64_t> parse_history_count(std::string_view argument) {
  std::uint64_t count = 0;
  auto [end, error] = std::from_chars(argument.data(), argument.data() + argument.size(), count);
  if (argument.empty() || error != std::errc{} || end != argument.data() + argument.size())
    return std::nullopt;
  return count;
}

void RoomCatchUp::start_epoch(const std::string& epoch, std::uint64_t last, std::uint64_t missed) {
  RoomHistory::EpochChange change = room_.history_.start_epoch(epoch, last);
  if (change == RoomHistory::EpochChange::same) {
    // Said while this server's link was down, and trimmed from the stream since.
    if (missed != 0 && !room_.closing_)
      room_.broadcast(chat::notice::missed_trimmed(missed), nullptr);
    return answer_pending();
  }
  room_.flush_relay();
  bool first = change == RoomHistory::EpochChange::first;
  if (!first)
    room_.logger_.info("the room's message ids start again (epoch {}): Redis lost them", epoch);
  for (ChatMember* member : room_.members_.list()) {
    if (!member->wants_ids_) {
      // Lines counted as lost with Redis are news to anyone (ids or not).
      if (!first && missed != 0) room_.send_to(*member, chat::notice::missed_ids_lost(missed));
      continue;
    }
    // Its ids from now on; after a first connection to Redis they simply continue the room's
    // (nothing was lost), after that the history they counted was lost with Redis.
    std::string text = chat::notice::cap_ids(room_.history_.epoch(), room_.history_.last_id(),
                                             room_.max_line_, room_.secrets_.of(member->id_));
    if (!first) {
      text += missed != 0 ? chat::notice::missed_ids_lost(missed) : chat::notice::missed_ids_lost();
    }
    room_.send_to(*member, std::move(text));
  }
  answer_pending();
}

void RoomCatchUp::batch_epoch(const std::string& epoch,
                              const std::vector<chat::RoomEvent>& events) {
  if (epoch == room_.history_.epoch() && room_.history_.room_ids()) return;
  start_epoch(epoch, last_id_before(events));
}

void RoomCatchUp::since(ChatMember& member, std::string_view argument) {
  std::optional<chat::Since> since = chat::parse_since(argument);
  if (!since) return room_.send_to(member, chat::notice::since_usage());
  const RoomHistory& history = room_.history_;
  RoomBus& bus = *room_.bus_;
  if (bus.shared() && !history.room_ids() && room_.bus_reachable_ && !room_.closing_) {
    // A Redis room whose ids this server has not learnt yet (it has just started): answered
    // once it has them, or once Redis is known to be out of reach.
    waiting_[member.id_] = &member;
    pending_.emplace_back(member.id_, std::string(argument));
    return;
  }
  if (history.room_ids() && since->epoch == history.epoch() &&
      since->id + 1 < history.first_kept_id() && bus.connected() && history.limit() != 0) {
    // Older than this server's memory (it restarted, or the client comes from another server of
    // the room): the rest comes from the room's stream in Redis, one round trip. Until then the
    // member gets lines without ids (a recovering client ignores them: the replay has them).
    std::uint64_t up_to = history.first_kept_id() - 1;
    waiting_[member.id_] = &member;
    bus.replay(since->id, up_to,
               [this, id = member.id_, after = since->id,
                up_to](std::optional<std::vector<HistoryEntry>> stream) {
                 auto it = waiting_.find(id);
                 if (it == waiting_.end()) return;  // gone meanwhile
                 ChatMember& asker = *it->second;
                 waiting_.erase(it);
                 finish(asker, after, up_to, stream);
               });
    return;
  }
  bool other_epoch = since->epoch != history.epoch();
  finish(member, other_epoch ? 0 : since->id, 0, std::nullopt, other_epoch);
}

void RoomCatchUp::finish(ChatMember& member, std::uint64_t after, std::uint64_t up_to,
                         const std::optional<std::vector<HistoryEntry>>& stream, bool other_epoch) {
  // It answers as /cap ids does first: a reconnecting client sends one command, and the lines
  // relayed to it before this (plain) all come again in the replay, with their ids.
  room_.commands_.cap_ids(member);
  std::string out = room_.history_.replay(member.name_, after, up_to, stream, other_epoch);
  if (!out.empty()) room_.send_to(member, std::move(out));
}

void RoomCatchUp::history(ChatMember& member, std::string_view argument) {
  std::optional<std::uint64_t> count = parse_history_count(argument);
  if (!count) return room_.send_to(member, chat::notice::history_usage());
  if (room_.history_.limit() == 0) return room_.send_to(member, chat::notice::no_history());
  std::vector<HistoryEntry> last = room_.history_.last(*count);
  if (!last.empty()) room_.send_to(member, RoomHistory::format(last));
}

void RoomCatchUp::answer_pending() {
  for (auto& [id, argument] : std::exchange(pending_, {})) {
    auto it = waiting_.find(id);
    if (it == waiting_.end()) continue;  // gone meanwhile
    ChatMember& member = *it->second;
    waiting_.erase(it);
    since(member, argument);
  }
}

}  // namespace mux
