// MessageAcks: "/cap acks [WRITER]" in the room (issue 23). A member that asked has each of its
// messages confirmed with "* ack ID" once it is stored: at once in a room of one server, when
// Redis answers the publish in a Redis room (ID 0 when Redis went away: relayed here only). With
// WRITER (a key the client made) its messages are also numbered under the key's digest, so a
// reconnecting client is told how many are in and a resend whose first copy came in after all is
// stored once ("* ack again"); in a Redis room the count is the room's, read from Redis while the
// member's next lines wait.
//
// Why a class of its own: acknowledgement is bookkeeping beside the relay (who is owed what, in
// publish order), and plain clients never touch it. It works on the room as its friend (to send,
// and to let a member that ended its input leave once its last ack is out).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "chat/writer_ledger.hpp"

namespace mux {

class ChatMember;
class ChatRoom;

// The senders of the messages published to Redis and not answered yet, in publish order, as runs
// (sender, messages): Redis answers each publish with the first id of its messages, and
// `answered` hands each run's share of them back to its sender. No I/O.
class PublishRuns {
 public:
  // One more message of `sender` was published.
  void add(std::uint64_t sender) {
    if (!runs_.empty() && runs_.back().first == sender) {
      ++runs_.back().second;
    } else {
      runs_.emplace_back(sender, 1);
    }
  }
  // Redis stored `count` messages from `first_id` on (0: none, Redis went away): calls
  // `take(sender, first_id, n)` for each run's share, oldest first (first_id stays 0 when 0).
  // `take` may add messages meanwhile: they queue behind the ones answered.
  template <typename Take>
  void answered(std::uint64_t first_id, std::size_t count, Take&& take) {
    while (count > 0 && !runs_.empty()) {
      auto& [sender, messages] = runs_.front();  // a deque: stays valid while `take` adds
      std::size_t share = std::min(count, messages);
      take(sender, first_id, share);
      if (first_id != 0) first_id += share;
      count -= share;
      messages -= share;
      if (messages == 0) runs_.pop_front();
    }
  }
  [[nodiscard]] std::size_t runs() const noexcept { return runs_.size(); }

 private:
  std::deque<std::pair<std::uint64_t, std::size_t>> runs_;
};

// A writer's key as the room keeps it (and, in a Redis room, Redis): a digest, so the writer key
// itself, which lets its holder's lines be taken for repeats, is kept nowhere.
[[nodiscard]] std::string writer_key(std::string_view writer);

class MessageAcks {
 public:
  explicit MessageAcks(ChatRoom& room) : room_(room) {}
  MessageAcks(const MessageAcks&) = delete;
  MessageAcks& operator=(const MessageAcks&) = delete;

  // "/cap acks [WRITER]" (`writer` empty without one).
  void ask(ChatMember& member, std::string_view writer);
  // A message of a member with a writer key is about to be relayed: false (and the member told
  // "* ack again") when its number was stored already.
  bool number_message(ChatMember& sender);
  // A message of `sender` was relayed with `id`: acknowledged now, or, when it went to Redis,
  // once Redis answers (every sender's messages are counted, to keep the answers aligned).
  void relayed(ChatMember& sender, std::uint64_t id, bool to_redis);
  // RoomEvents::messages_stored.
  void stored(std::uint64_t first_id, std::size_t count);
  // The member is gone: no ack goes to it any more.
  void forget(std::uint64_t member_id) { askers_.erase(member_id); }

 private:
  // One "* ack ID" per message of `member` (ID 0: relayed here only, Redis out of reach).
  static void acknowledge(ChatMember& member, std::uint64_t id, std::size_t count);
  // /cap acks WRITER answered: `stored` of its messages are in, this connection's count on.
  void start_numbering(ChatMember& member, std::uint64_t stored);

  ChatRoom& room_;
  PublishRuns published_;
  // The members that asked for acks, by the room's member id.
  std::unordered_map<std::uint64_t, ChatMember*> askers_;
  // How many messages of each writer (/cap acks WRITER) this room stored.
  chat::WriterLedger writers_;
};

}  // namespace mux
