// RoomCatchUp: what a member missed and how it learns it (issue 23). `/since EPOCH ID` (what a
// reconnecting client sends) is answered from the room's memory or, when it asks for more than
// memory holds in a Redis room, from the room's stream; `/history N` replays the last N; and the
// room's epoch, the count its ids are in, is set by the bus at each connection (a new one when
// Redis lost the ids), which every member that counts ids is told.
//
// Why a class of its own: it is the one flow of the room that waits on the bus twice (for the
// room's ids when this server has just started, then for the stream) and so keeps who is waiting
// for which; the rest of the room never waits for a replay. It works on the room's state as the
// room's friend (history, members, bus): it coordinates those, it owns none of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/room_bus.hpp"

namespace mux {

class ChatMember;
class ChatRoom;

// The id just before the first numbered message among `events` (0 when none is numbered or it
// is 1): where this server's count starts when another server reached a new epoch first.
[[nodiscard]] std::uint64_t last_id_before(const std::vector<chat::RoomEvent>& events);

// The N of "/history N": a plain decimal number, nothing else (nullopt otherwise).
[[nodiscard]] std::optional<std::uint64_t> parse_history_count(std::string_view argument);

class RoomCatchUp {
 public:
  explicit RoomCatchUp(ChatRoom& room) : room_(room) {}
  RoomCatchUp(const RoomCatchUp&) = delete;
  RoomCatchUp& operator=(const RoomCatchUp&) = delete;

  // /since EPOCH ID: answered now, or once the room's ids or the stream are in.
  void since(ChatMember& member, std::string_view argument);
  // /history N.
  void history(ChatMember& member, std::string_view argument);
  // The bus said the room's epoch and the last id in it, and how many lines this server missed
  // while its link was down that it could not read back (RoomEvents::room_epoch): every member
  // is told of those.
  void start_epoch(const std::string& epoch, std::uint64_t last, std::uint64_t missed = 0);
  // A batch from another server in `epoch` (RoomEvents::batch_epoch): a new epoch another
  // server reached first starts here just before the batch's first message.
  void batch_epoch(const std::string& epoch, const std::vector<chat::RoomEvent>& events);
  // Runs the /since commands that waited for the room's ids (they came, or Redis is out of
  // reach and this server answers with what it has).
  void answer_pending();
  // The member left: nothing waits for it any more.
  void forget(std::uint64_t member_id) { waiting_.erase(member_id); }

 private:
  // The answer to /since: the cap answer, what may be missing, then the lines after `after`
  // (up to `up_to` from the stream when it was read, then from memory).
  void finish(ChatMember& member, std::uint64_t after, std::uint64_t up_to,
              const std::optional<std::vector<HistoryEntry>>& stream, bool other_epoch = false);

  ChatRoom& room_;
  // Members whose /since waits (for the room's ids or the stream), by the room's member id.
  std::unordered_map<std::uint64_t, ChatMember*> waiting_;
  // /since commands that wait for the room's ids (member id, argument), in arrival order.
  std::vector<std::pair<std::uint64_t, std::string>> pending_;
};

}  // namespace mux
