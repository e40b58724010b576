#include "chat/chat_room.hpp"

#include <algorithm>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "core/logger.hpp"

namespace mux {
namespace {
// A chunk's messages are handed out at the latest at this size, so one block stays small
// compared with --max-queue and a reader gets them while the sender is still sending.
constexpr std::size_t kRelayBlockBytes = 32 * 1024;
}  // namespace

ChatRoom::ChatRoom(Logger& logger, std::size_t max_line) : logger_(logger), max_line_(max_line) {}

void ChatRoom::join(ChatMember& member, std::string_view origin) {
  flush_relay();
  member.join_number_ = ++arrivals_;
  member.name_ = fmt::format("Client {}", member.join_number_);
  member.has_nick_ = false;
  member.in_room_ = true;
  member.slot_ = members_.size();
  members_.push_back(&member);
  logger_.info("{} joined from {}", member.name_, origin);
  send_to(member, chat::notice::welcome(member.name_));
  if (members_.size() <= kAnnounceUpTo) broadcast(chat::notice::joined(member.name_), &member);
}

void ChatRoom::receive_line(ChatMember& sender, std::string_view text, bool cut) {
  if (!sender.in_room_) return;
  if (cut) send_to(sender, chat::notice::line_cut(max_line_));
  chat::Command command = chat::parse_command(text);
  if (command.kind != chat::CommandKind::message) {
    logger_.detail("{}: {}", sender.name_, text);
    run_command(sender, command);
    return;
  }
  if (command.text.empty()) return;  // an empty line carries nothing worth a delivery
  logger_.detail("[{}]: {}", sender.name_, command.text);
  if (relay_sender_ != &sender) flush_relay();
  relay_sender_ = &sender;
  chat::notice::append_relay(relay_text_, sender.name_, command.text);
  if (relay_text_.size() >= kRelayBlockBytes) flush_relay();
}

void ChatRoom::end_of_input() {
  flush_relay();
}

void ChatRoom::flush_relay() {
  if (relay_text_.empty()) return;
  ChatMember* sender = std::exchange(relay_sender_, nullptr);
  broadcast(make_block(std::exchange(relay_text_, {})), sender);
}

void ChatRoom::run_command(ChatMember& sender, const chat::Command& command) {
  switch (command.kind) {
    case chat::CommandKind::nick:
      rename(sender, command.text);
      return;
    case chat::CommandKind::who:
      send_to(sender, who_list());
      return;
    case chat::CommandKind::help:
      send_to(sender, chat::notice::help());
      return;
    case chat::CommandKind::quit:
      leave(sender, "quit", false);
      sender.close_after_output();
      return;
    case chat::CommandKind::unknown:
      send_to(sender, chat::notice::unknown_command(command.text));
      return;
    case chat::CommandKind::message:
      return;  // not a command; receive_line relays those
  }
}

void ChatRoom::rename(ChatMember& member, std::string_view nick) {
  if (nick.empty()) return send_to(member, chat::notice::nick_usage());
  if (auto problem = chat::nick_problem(nick)) {
    return send_to(member, chat::notice::nick_invalid(nick, *problem));
  }
  if (member.has_nick_ && member.name_ == nick)
    return send_to(member, chat::notice::nick_unchanged(nick));
  std::string folded = chat::fold_nick(nick);
  bool only_case_changes = member.has_nick_ && chat::fold_nick(member.name_) == folded;
  if (!only_case_changes && taken_nicks_.count(folded) != 0) {
    return send_to(member, chat::notice::nick_taken(nick));
  }
  if (member.has_nick_) taken_nicks_.erase(chat::fold_nick(member.name_));
  taken_nicks_.insert(std::move(folded));
  std::string old_name = std::exchange(member.name_, std::string(nick));
  member.has_nick_ = true;
  logger_.info("{} is now {}", old_name, member.name_);
  std::string text = chat::notice::renamed(old_name, member.name_);
  if (members_.size() <= kAnnounceUpTo) {
    broadcast(std::move(text), nullptr);
  } else {
    send_to(member, std::move(text));
  }
}

void ChatRoom::leave(ChatMember& member, std::string_view reason, bool too_slow) {
  if (!member.in_room_) return;
  flush_relay();  // its last messages go out before the notice that it left
  remove(member);
  logger_.info("{} left ({})", member.name_, reason);
  // A slow reader's disconnect is always announced: the others should know why it went quiet.
  if (!closing_ && (too_slow || members_.size() < kAnnounceUpTo)) {
    broadcast(chat::notice::left(member.name_, too_slow), nullptr);
  }
}

void ChatRoom::remove(ChatMember& member) {
  // Swap-remove keeps leaving O(1); /who restores arrival order from join_number_.
  ChatMember* last = members_.back();
  members_[member.slot_] = last;
  last->slot_ = member.slot_;
  members_.pop_back();
  member.in_room_ = false;
  if (member.has_nick_) taken_nicks_.erase(chat::fold_nick(member.name_));
  if (relay_sender_ == &member) relay_sender_ = nullptr;
}

void ChatRoom::close_all() {
  flush_relay();
  closing_ = true;
  broadcast(chat::notice::shutting_down(), nullptr);
  // close_after_output() makes each member leave (removing itself) once it is done; work on a
  // copy so the removals cannot disturb the walk.
  std::vector<ChatMember*> everyone = members_;
  for (ChatMember* member : everyone) {
    leave(*member, "server shutting down", false);
    member->close_after_output();
  }
}

std::string ChatRoom::who_list() const {
  std::vector<const ChatMember*> ordered(members_.begin(), members_.end());
  std::sort(ordered.begin(), ordered.end(), [](const ChatMember* a, const ChatMember* b) {
    return a->join_number_ < b->join_number_;
  });
  std::vector<std::string_view> names;
  names.reserve(ordered.size());
  for (const ChatMember* member : ordered)
    names.emplace_back(member->name_);
  return chat::notice::who(names);
}

void ChatRoom::send_to(ChatMember& member, std::string text) {
  flush_relay();  // keep every receiver's view in the order things happened
  member.deliver(make_block(std::move(text)));
}

void ChatRoom::broadcast(std::string text, const ChatMember* except) {
  flush_relay();
  broadcast(make_block(std::move(text)), except);
}

void ChatRoom::broadcast(const Block& block, const ChatMember* except) {
  for (ChatMember* member : members_) {
    if (member != except) member->deliver(block);
  }
}

}  // namespace mux
