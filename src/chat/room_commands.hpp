// RoomCommands: what each chat command does in the room — /nick, /who, /help, /quit, /cap,
// /since, /history, /reclaim — once the room has checked the line is a command and charged it to
// the sender's command rate. It dispatches to the piece that owns each flow (NickChanges,
// RoomCatchUp, MessageAcks) and answers the simple ones itself.
//
// Why a class of its own: the table of commands grows with the protocol (issue 23 added four)
// while the room's line path stays the same; a new command is a case here and its flow's class.
// It works on the room as its friend (who is here, sending, leaving).
#pragma once

#include <string_view>

namespace mux {

class ChatMember;
class ChatRoom;
namespace chat {
struct Command;
}

class RoomCommands {
 public:
  explicit RoomCommands(ChatRoom& room) : room_(room) {}
  RoomCommands(const RoomCommands&) = delete;
  RoomCommands& operator=(const RoomCommands&) = delete;

  void run(ChatMember& sender, const chat::Command& command);
  // The answer to "/cap ids" (also the start of a /since answer): the member's room lines carry
  // ids from now on; it is told where they start, the longest line the server takes, its
  // reconnect secret, and who is here.
  void cap_ids(ChatMember& member);

 private:
  // /cap ids or /cap acks [WRITER].
  void cap(ChatMember& member, std::string_view argument);

  ChatRoom& room_;
};

}  // namespace mux
