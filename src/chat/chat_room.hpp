// ChatRoom: the chat's shared state and rules — who is here and under what name, what a line
// means (/nick, /who, /help, /quit or a message) and who must hear about it. It does no I/O
// itself: it hands formatted blocks to ChatMembers. The same room serves both --serve modes: in
// single mode a member is a client socket in this process (LocalMember), in fork mode it is the
// parent's end of the socketpair to the child serving that client (ChildLink). The server owns
// the room and the members; members call receive_line/end_of_input/leave as their input arrives.
//
// With a RoomBus (--redis) the room is shared with other servers: local events are published,
// remote ones applied (ChatRoom::apply_remote), client numbers and nicks are room-wide, and /who
// adds the other servers' members. A newcomer then waits for its number (one round trip) before it
// is welcomed, and a /nick waits for its room-wide claim: lines the member sends meanwhile are
// held (its input paused, so they stay few) and handled in order once the answer is in, under
// the name it then has. A member that leaves meanwhile (a script's end of input right after its
// line) is kept until its held lines are handled: nothing it sent is lost on the way in.
//
// The room keeps the state and the line path (join, a line in, the relay, leave); each other
// flow is its own class working on that state: RoomCommands (what a command does), NickChanges
// (/nick, /reclaim, claims), RoomCatchUp (/since, /history, the epoch), MessageAcks (/cap acks);
// the pure pieces beside them are FloodControl, NickRegistry, RoomHistory, RoomMembers,
// ReconnectSecrets and WriterLedger.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/chat_protocol.hpp"
#include "chat/flood_control.hpp"
#include "chat/message_acks.hpp"
#include "chat/nick_changes.hpp"
#include "chat/nick_registry.hpp"
#include "chat/reconnect_secrets.hpp"
#include "chat/room_bus.hpp"
#include "chat/room_catch_up.hpp"
#include "chat/room_commands.hpp"
#include "chat/room_history.hpp"
#include "chat/room_members.hpp"
#include "core/base/rate_limit.hpp"
#include "core/loop/output_queue.hpp"

namespace mux {

class Logger;

class ChatMember {
 public:
  ChatMember() = default;
  ChatMember(const ChatMember&) = delete;
  ChatMember& operator=(const ChatMember&) = delete;
  virtual ~ChatMember() = default;

  // Queues bytes for this client. Called while the room walks its member list, so it must never
  // call back into the room synchronously (a member found too slow leaves from a deferred call).
  virtual void deliver(const Block& block) = 0;
  // The room is done with this member (/quit, shutdown, server full): write what is queued, then
  // close. The member calls ChatRoom::leave again on its way out; that second call is a no-op.
  virtual void close_after_output() = 0;
  // The client sends faster than its limits: read nothing more from it for `pause` (so TCP
  // pushes back on it); a later call while paused extends the pause. Never calls into the room.
  virtual void pause_input(std::chrono::milliseconds pause) = 0;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] bool in_room() const noexcept { return in_room_; }

 private:
  friend class ChatRoom;
  // The room's flows (see ChatRoom): they read and set what the room keeps per member.
  friend class MessageAcks;
  friend class NickChanges;
  friend class RoomCatchUp;
  friend class RoomCommands;
  friend class RoomMembers;  // its list, slot and ids wish
  // What only a member waiting for the bus has, made when it first holds a line.
  struct Held {
    // Lines sent while admitting_ or claiming_, handled in order when the answer comes.
    std::vector<std::pair<std::string, bool>> lines;
    std::size_t bytes = 0;
    // It left while lines were held: the reason and too_slow, acted on once they are handled.
    std::optional<std::pair<std::string, bool>> leave;
  };
  [[nodiscard]] bool holds_lines() const noexcept { return held_ && !held_->lines.empty(); }
  // Its lines wait for an answer of the bus (they are held, in order).
  [[nodiscard]] bool waits_for_bus() const noexcept {
    return admitting_ || claiming_ || numbering_;
  }
  [[nodiscard]] bool leave_pending() const noexcept { return held_ && held_->leave.has_value(); }

  std::string name_;
  std::uint64_t id_ = 0;                // this room's handle for it in asynchronous answers
  std::uint64_t join_number_ = 0;       // orders /who by arrival
  std::unique_ptr<Held> held_;          // null: nothing held (its memory back once all is handled)
  std::uint64_t lines_seen_ = 0;        // its first line is checked for other protocols
  std::size_t slot_ = 0;                // index in RoomMembers::list()
  std::unique_ptr<ClientRates> rates_;  // null until its first line
  bool in_room_ = false;
  bool admitting_ = false;  // waiting for the bus's answer to join
  bool claiming_ = false;   // a /nick claim is in flight (its lines wait for the answer)
  bool numbering_ = false;  // "/cap acks WRITER" waits for the room's count of the writer
  bool has_nick_ = false;
  bool wants_ids_ = false;       // asked "/cap ids": its room lines carry ids
  bool wants_acks_ = false;      // asked "/cap acks": each of its messages is acknowledged
  std::uint64_t acks_owed_ = 0;  // its messages still waiting for Redis's answer
  // "/cap acks WRITER": the writer's key (a digest) and the number its next message gets.
  std::string writer_;
  std::uint64_t writer_next_ = 0;
};

// Owns the members; a member that has closed asks to be destroyed (after the current batch).
class MemberOwner {
 public:
  virtual void release(ChatMember& member) = 0;

 protected:
  ~MemberOwner() = default;
};

class ChatRoom final : public RoomEvents {
 public:
  // Joins, leaves and renames are announced to everyone only while the room has at most this
  // many members (--announce-up-to): in a bigger room each one would cost a delivery to
  // thousands of clients (N^2 for N arrivals) and the notices would drown the conversation.
  // They are always logged (another server's at the detail level beyond it).
  static constexpr std::size_t kAnnounceUpTo = 1000;
  // Held lines (see above) beyond this are dropped and logged: a safety net only, as a member
  // with held lines is read no further until they are handled.
  static constexpr std::size_t kMaxHeldBytes = 4 << 20;
  // How long a member with held lines is not read; renewed while lines keep coming.
  static constexpr std::chrono::milliseconds kHoldPause{20};

  // /who names at most this many members (and says how many there are).
  static constexpr std::size_t kWhoPage = RoomMembers::kWhoPage;

  using Clock = TokenBucket::Clock;
  using ClockSource = std::function<Clock::time_point()>;

  // `clock` is for tests; the server uses the steady clock.
  ChatRoom(Logger& logger, std::size_t max_line, ClientLimits limits = {},
           ClockSource clock = &Clock::now);

  // `origin` is for the log only ("127.0.0.1:40000", plus the pid in fork mode).
  void join(ChatMember& member, std::string_view origin);
  // One sanitized line from `sender`; `cut` when it was cut at --max-line.
  void receive_line(ChatMember& sender, std::string_view text, bool cut);
  // The sender's current chunk of input is done: consecutive messages from one sender are sent
  // as one block per chunk (one queue entry and one iovec per receiver instead of one per line).
  void end_of_input();
  // Removes `member` and tells the others. `reason` goes to the log. No-op if already gone.
  // False when the member still has lines held (joining, or a /nick claim in flight): the room
  // handles them first, then makes it leave and calls its close_after_output(); until then the
  // member must stay (or call gone()).
  bool leave(ChatMember& member, std::string_view reason, bool too_slow);
  // The member is about to be destroyed (its connection is gone): it leaves now, held lines
  // and all. Call after leave(); harmless when it has left already.
  void gone(ChatMember& member);
  // Shutdown: everyone gets `* server shutting down` and is asked to close; no leave notices.
  void close_all();

  [[nodiscard]] std::size_t size() const noexcept override { return members_.size(); }
  void set_announce_limit(std::size_t members) { announce_up_to_ = members; }
  // Whether a room of `members` (all servers) announces joins, leaves and renames.
  [[nodiscard]] bool announces(std::size_t members) const noexcept override {
    return members <= announce_up_to_;
  }

  // --history N: the last N messages are replayed to each newcomer (0: off).
  void set_history(std::size_t limit) { history_.set_limit(limit); }
  // This room's epoch (issue 23): a random token made at start; the message ids count from 1
  // within it, so a client that saw another epoch knows the history it knew is gone.
  [[nodiscard]] const std::string& epoch() const noexcept override { return history_.epoch(); }
  [[nodiscard]] std::uint64_t last_id() const noexcept override { return history_.last_id(); }
  // Shares the room with other servers; null (the default) keeps it to this server.
  void set_bus(RoomBus* bus) {
    bus_ = bus != nullptr ? bus : &no_bus_;
    nicks_.set_bus(*bus_);
  }

  // RoomEvents: what the bus reports (see chat/room_bus.hpp).
  void apply_remote(const std::vector<chat::RoomEvent>& events) override;
  void room_epoch(const std::string& epoch, std::uint64_t last, std::uint64_t missed) override {
    catch_up_.start_epoch(epoch, last, missed);
  }
  void batch_epoch(const std::string& epoch, const std::vector<chat::RoomEvent>& events) override {
    catch_up_.batch_epoch(epoch, events);
  }
  void own_messages_numbered(const std::vector<chat::RoomEvent>& events) override;
  void messages_stored(std::uint64_t first_id, std::size_t count) override {
    acks_.stored(first_id, count);
  }
  void reclaimed_elsewhere(const std::string& nick, const std::string& verifier) override {
    nick_changes_.reclaimed_elsewhere(nick, verifier);
  }
  void remote_members_changed() override { members_.names_changed(); }
  void bus_reachable(bool reachable) override;
  [[nodiscard]] std::vector<std::string> local_names() const override;
  [[nodiscard]] std::vector<std::string> local_nick_keys() const override;
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> local_nick_proofs() const override;
  [[nodiscard]] std::uint64_t highest_number() const noexcept override { return highest_number_; }

 private:
  // The room's flows, each in its own class (issue 20). They coordinate the state kept here
  // (members, names, history, the bus), so they are friends rather than users of a dozen
  // accessors that would each have one caller.
  friend class MessageAcks;
  friend class NickChanges;
  friend class RoomCatchUp;
  friend class RoomCommands;

  void admit(ChatMember& member, std::string_view origin, std::uint64_t number,
             const std::vector<HistoryEntry>& history);
  // Members here and on the other servers.
  [[nodiscard]] std::size_t everyone() const;
  // A number handed out without the bus: above every one seen here or on the other servers.
  std::uint64_t local_number();
  // Handles the lines held while it waited, in order, until it waits again; then a pending leave.
  void release_held(ChatMember& member);
  void leave_now(ChatMember& member, std::string_view reason, bool too_slow);
  // Charges a line to the sender's buckets; false when the sender was disconnected for flooding.
  bool charge_line(ChatMember& sender, std::size_t bytes, Clock::time_point now);
  // Charges a command; false when it is over the command rate and must not run.
  bool charge_command(ChatMember& sender, Clock::time_point now);
  // The first line of a client that is not a chat client at all (HTTP, an upload): refuses it.
  bool refuse_other_protocol(ChatMember& sender, std::string_view first_line);
  // Appends one message to the chunk being relayed (and, for capable members, with its id).
  // `room_id`: its room-wide id when it came numbered from Redis (else 0).
  // Its id (0: none yet).
  std::uint64_t append_message(std::string_view name, std::string_view text, std::uint64_t room_id);
  void send_to(ChatMember& member, std::string text);
  void broadcast(std::string text, const ChatMember* except);
  void broadcast(const Block& block, const ChatMember* except);
  void flush_relay();
  void remove(ChatMember& member);
  // /who and /who TEXT (RoomMembers), with the other servers' names while they are in reach.
  [[nodiscard]] const Block& who_list();
  [[nodiscard]] std::string who_matching(std::string_view text) const;

  Logger& logger_;
  std::size_t max_line_;
  FloodControl flood_;
  ClockSource clock_;
  RoomMembers members_;
  std::uint64_t arrivals_ = 0;
  std::uint64_t next_member_id_ = 0;
  // Without the bus, "Client N" counts on from the highest number seen here.
  std::uint64_t highest_number_ = 0;
  // Members waiting for the bus (admission) or with a claim in flight, by id_.
  std::unordered_map<std::uint64_t, ChatMember*> by_id_;
  NullRoomBus no_bus_;
  RoomBus* bus_ = &no_bus_;      // never null
  NickRegistry nicks_{no_bus_};  // (after the bus it releases nicks through)
  bool bus_reachable_ = true;    // only a bus that reaches other servers says otherwise
  std::size_t announce_up_to_ = kAnnounceUpTo;
  // The last --history messages, the epoch and the ids.
  RoomHistory history_;
  bool closing_ = false;
  // Messages of the current chunk not yet handed to the receivers. Their copy with ids is
  // built only while some member asked for ids: plain clients pay nothing for them.
  RelayChunk relay_;
  // Reconnect secrets of the members that asked for ids.
  ReconnectSecrets secrets_;
  RoomCommands commands_{*this};
  NickChanges nick_changes_{*this};
  RoomCatchUp catch_up_{*this};
  MessageAcks acks_{*this};
};

}  // namespace mux
