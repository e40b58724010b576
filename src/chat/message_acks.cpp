#include "chat/message_acks.hpp"

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "core/access/access_tokens.hpp"
#include "core/base/logger.hpp"

namespace mux {

std::string writer_key(std::string_view writer) {
  return sha256_hex(fmt::format("mux writer\n{}", writer));
}

void MessageAcks::ask(ChatMember& member, std::string_view writer) {
  if (!writer.empty() && !chat::valid_secret(writer))
    return room_.send_to(member, chat::notice::cap_usage());
  member.wants_acks_ = true;
  askers_[member.id_] = &member;
  RoomBus& bus = *room_.bus_;
  // Without a count the room can trust (a Redis room whose Redis is out of reach), no
  // numbers: the client then sends nothing again.
  if (writer.empty() || (bus.shared() && !bus.connected()))
    return room_.send_to(member, chat::notice::cap_acks());
  member.writer_ = writer_key(writer);
  if (!bus.shared()) return start_numbering(member, writers_.last(member.writer_));
  // A Redis room: the count is the room's (the client may come from another server, or from
  // this one before a restart); its next lines wait for it, in order.
  member.numbering_ = true;
  bus.writer_stored(member.writer_, [this, id = member.id_](std::optional<std::uint64_t> stored) {
    auto it = room_.by_id_.find(id);
    if (it == room_.by_id_.end() || !it->second->numbering_) return;
    ChatMember& asker = *it->second;
    asker.numbering_ = false;
    if (stored) {
      writers_.learn(asker.writer_, *stored);
      start_numbering(asker, writers_.last(asker.writer_));
    } else {
      asker.writer_.clear();
      room_.send_to(asker, chat::notice::cap_acks());
    }
    room_.release_held(asker);
  });
}

void MessageAcks::start_numbering(ChatMember& member, std::uint64_t stored) {
  member.writer_next_ = stored + 1;
  room_.send_to(member, chat::notice::cap_acks_numbered(stored));
}

bool MessageAcks::number_message(ChatMember& sender) {
  std::uint64_t number = sender.writer_next_++;
  if (!writers_.accept(sender.writer_, number)) {
    // A resend whose first copy (still unread on the connection it replaced) came in after
    // all: stored once, confirmed again.
    room_.logger_.detail("{}: a message sent again was stored already", sender.name_);
    sender.deliver(make_block(chat::notice::ack_again()));
    return false;
  }
  room_.bus_->count_writer(sender.writer_, number);
  return true;
}

void MessageAcks::relayed(ChatMember& sender, std::uint64_t id, bool to_redis) {
  if (to_redis) {
    // Acknowledged once Redis answers (stored); every sender's run keeps the count.
    published_.add(sender.id_);
    if (sender.wants_acks_) ++sender.acks_owed_;
  } else if (sender.wants_acks_) {
    acknowledge(sender, id, 1);
  }
}

void MessageAcks::acknowledge(ChatMember& member, std::uint64_t id, std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count; ++i)
    text += chat::notice::ack(id == 0 ? 0 : id + i);
  // Straight to the sender: an ack never breaks the chunk being relayed to the others.
  member.deliver(make_block(std::move(text)));
}

void MessageAcks::stored(std::uint64_t first_id, std::size_t count) {
  published_.answered(first_id, count,
                      [this](std::uint64_t member_id, std::uint64_t first, std::size_t share) {
                        auto it = askers_.find(member_id);
                        if (it == askers_.end()) return;
                        ChatMember& sender = *it->second;
                        acknowledge(sender, first, share);
                        sender.acks_owed_ -= std::min<std::uint64_t>(sender.acks_owed_, share);
                        // It ended its input meanwhile: it leaves once its last message is
                        // acknowledged.
                        if (sender.acks_owed_ == 0 && sender.leave_pending())
                          room_.release_held(sender);
                      });
}

}  // namespace mux
