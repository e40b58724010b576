#include "chat/room_commands.hpp"

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"

namespace mux {

void RoomCommands::run(ChatMember& sender, const chat::Command& command) {
  switch (command.kind) {
    case chat::CommandKind::nick:
      return room_.nick_changes_.rename(sender, command.text);
    case chat::CommandKind::who:
      room_.flush_relay();
      if (command.text.empty()) {
        sender.deliver(room_.who_list());
      } else {
        room_.send_to(sender, room_.who_matching(command.text));
      }
      return;
    case chat::CommandKind::help:
      return room_.send_to(sender, chat::notice::help());
    case chat::CommandKind::quit:
      room_.leave(sender, "quit", false);
      sender.close_after_output();
      return;
    case chat::CommandKind::cap:
      return cap(sender, command.text);
    case chat::CommandKind::since:
      return room_.catch_up_.since(sender, command.text);
    case chat::CommandKind::history:
      return room_.catch_up_.history(sender, command.text);
    case chat::CommandKind::reclaim:
      return room_.nick_changes_.reclaim(sender, command.text);
    case chat::CommandKind::unknown:
      return room_.send_to(sender, chat::notice::unknown_command(command.text));
    case chat::CommandKind::message:
      return;  // not a command; the room relays those
  }
}

void RoomCommands::cap(ChatMember& member, std::string_view argument) {
  std::string_view word = argument.substr(0, argument.find(' '));
  if (chat::fold_nick(word) == "acks") {
    std::string_view writer = word.size() < argument.size() ? argument.substr(word.size() + 1) : "";
    return room_.acks_.ask(member, writer);
  }
  if (chat::fold_nick(argument) != "ids") return room_.send_to(member, chat::notice::cap_usage());
  cap_ids(member);
}

void RoomCommands::cap_ids(ChatMember& member) {
  room_.flush_relay();  // what was relayed before goes out without ids, before the answer
  room_.members_.want_ids(member);
  bool made = false;
  const std::string& secret = room_.secrets_.issue(member.id_, made);
  if (made) room_.nick_changes_.store_proof(member);
  room_.send_to(member, chat::notice::cap_ids(room_.history_.epoch(), room_.history_.last_id(),
                                              room_.max_line_, secret));
  member.deliver(room_.who_list());
}

}  // namespace mux
