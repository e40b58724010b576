// RoomMembers: who is in the room on this server, and delivery to them. The fan-out is the hot
// path: a block is shared by every receiver (one queue entry each, never a copy), and a chunk of
// messages goes out once per receiver as plain lines or, to the members that asked with
// `/cap ids`, with their ids. It also answers /who (this server's members by arrival, then the
// other servers' by name), caching the full list until membership or names change. The room
// decides what is said to whom; this class only walks the list.
//
// RelayChunk: the messages of the input chunk being relayed, all from one local sender (or all
// remote), not yet handed out: consecutive lines become one block per receiver.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/loop/output_queue.hpp"

namespace mux {

class ChatMember;

class RoomMembers {
 public:
  // /who names at most this many members (and says how many there are).
  static constexpr std::size_t kWhoPage = 100;
  using RemoteNames = std::function<std::vector<std::string>()>;

  void add(ChatMember& member);
  // O(1): the last member takes its place (the delivery order is not the arrival order).
  void remove(ChatMember& member);
  [[nodiscard]] std::size_t size() const noexcept { return members_.size(); }
  [[nodiscard]] const std::vector<ChatMember*>& list() const noexcept { return members_; }

  // The member asked for ids (/cap ids): from now on it gets chunks with ids.
  void want_ids(ChatMember& member);
  [[nodiscard]] std::size_t with_ids() const noexcept { return with_ids_; }

  void broadcast(const Block& block, const ChatMember* except) const;
  // A chunk of messages from `sender` (null: remote), never sent back to it. `with_ids` is the
  // chunk with ids (null when none had one yet); a member that asked for ids gets it, or the
  // plain chunk when it has none unless `numbered_later` (the ids come with the messages' way
  // back from Redis, own_messages_numbered).
  void deliver_chunk(const Block& plain, const Block& with_ids, const ChatMember* sender,
                     bool numbered_later) const;
  // This server's message `block`, numbered on its way back from Redis, to the members that
  // asked for ids but its sender `sender_name`.
  void deliver_numbered(const Block& block, std::string_view sender_name) const;

  // The /who answer: the first kWhoPage names (here by arrival, then `remote_names()` sorted)
  // and how many there are. Built once per change: a /who storm costs one shared block per
  // request, not a sort of the whole room.
  [[nodiscard]] const Block& who_list(const RemoteNames& remote_names);
  // /who TEXT: the members whose names contain TEXT (ignoring ASCII case), built per request
  // (commands are rate limited).
  [[nodiscard]] std::string who_matching(std::string_view text,
                                         std::vector<std::string> remote_names) const;
  // Membership or a name changed, here or on the other servers: /who is built again.
  void names_changed() noexcept { who_cache_.reset(); }

 private:
  static bool by_arrival(const ChatMember* a, const ChatMember* b);

  std::vector<ChatMember*> members_;
  std::size_t with_ids_ = 0;
  Block who_cache_;
};

class RelayChunk {
 public:
  // A chunk is handed out at the latest at this size, so one block stays small compared with
  // --max-queue and a reader gets the lines while the sender is still sending.
  static constexpr std::size_t kMaxBytes = 32 * 1024;

  struct Taken {
    ChatMember* sender = nullptr;
    bool numbered_later = false;
    std::string plain;
    std::string with_ids;  // empty: no message had an id, or nobody asked
  };

  [[nodiscard]] bool empty() const noexcept { return plain_.empty(); }
  [[nodiscard]] bool full() const noexcept { return plain_.size() >= kMaxBytes; }
  [[nodiscard]] const ChatMember* sender() const noexcept { return sender_; }
  void set_sender(ChatMember* sender) noexcept { sender_ = sender; }
  // The sender left: its lines still go out, to everyone.
  void forget(const ChatMember* member) noexcept {
    if (sender_ == member) sender_ = nullptr;
  }
  // Its messages are local ones whose ids come back from Redis.
  void set_numbered_later() noexcept { numbered_later_ = true; }
  [[nodiscard]] bool numbered_later() const noexcept { return numbered_later_; }

  // Appends `[NAME]: TEXT`, and `@ID [NAME]: TEXT` to the copy with ids when `with_ids` and the
  // message has an id.
  void append(std::string_view name, std::string_view text, std::uint64_t id, bool with_ids);
  // What was gathered; the chunk starts empty again.
  Taken take();

 private:
  ChatMember* sender_ = nullptr;
  bool numbered_later_ = false;
  std::string plain_;
  std::string with_ids_;
};

}  // namespace mux
