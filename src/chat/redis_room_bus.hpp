// RedisRoomBus: shares one ChatRoom with every chat-server started with the same --redis and
// --room. Owns the RedisLink; the ChatServer owns the bus and the room, and the room calls the
// bus through RoomBus. Everything the servers share lives under the key prefix mux:room:<NAME>:
//   events          pub/sub channel: batches of RoomEvents (chat/room_event.hpp), one Redis
//                   message per loop batch; each server ignores its own (by server id)
//   clients         INCR counter: the N of "Client N", room-wide; whenever a server reaches
//                   Redis it raises it (kSeedScript) above every number it knows in use, so a
//                   Redis restarted empty never hands out a name someone connected still holds
//   nick:<key>      the server id holding a nick (by look-alike key; with --room-secret-file
//                   followed by a space and its tag); claimed by a Lua script that also takes
//                   over nicks of servers that stopped refreshing their presence, and answers
//                   the holder found, which the claiming server verifies (Lua cannot) and
//                   overrides when it fails
//   proofs          hash: nick:<key> -> "<holder value> <proof>", the proof a digest of the
//                   reconnect secret of the session holding that nick (issue 23), never the
//                   secret: a reclaim on another server (kReclaimScript) that matches it takes the
//                   nick at once and publishes a "k" line telling the holder to end its ghost
//   servers         sorted set: server id -> last heartbeat (Redis TIME, ms)
//   versions        hash: server id -> the version of its member set
//   registrations   hash: server id -> its signed registration (with --room-secret-file only;
//                   then members:<id> holds "TAG NAME" and versions "VERSION TAG")
//   members:<id>    set: the names on that server; expires kPresenceTtl after the last heartbeat
//   history         stream of messages (XADD MAXLEN ~ --history) under their ids ("0-ID"), read
//                   on join (XREVRANGE), by /since on any server (XRANGE), and by a server back
//                   from a dropped link for what it missed meanwhile (kEpochScript)
//   ids, epoch      the room-wide message ids (INCRBY, in the script that publishes a batch with
//                   messages) and their epoch, made anew when Redis lost it (restarted empty)
//   epochs          hash: base:<epoch> -> the id an epoch's ids count on from, end:<epoch> ->
//                   the highest id any server saw in an epoch Redis lost (kEpochScript): a server
//                   back after Redis restarted empty counts the lines it never saw
//   writer:<digest> how many messages of a chat-client's writer key ("/cap acks WRITER", issue
//                   23; a SHA-256 of the key, never the key) the room stored: raised by the
//                   publish script with the messages, expires kWriterTtl after the last one
//
// The bus is the wiring: it sends the commands and hands each answer to the piece that knows
// what it means. The scripts are in chat/redis_room_scripts.hpp; the pieces have no I/O:
//   MemberMirror    the other servers' member lists (chat/member_mirror.hpp): presence costs
//                   O(changes), not O(members): every join, leave and rename is an event and
//                   one step of its sender's member-set version; a batch with such events ends
//                   with a "v" line and is preceded by one script that applies the same changes
//                   to members:<id> and versions. Every kHeartbeat each server refreshes its
//                   presence and reads the live servers' ids and versions (O(servers)), and
//                   publishes a batch with its "v" line (a lost tail shows as a gap); a server
//                   gone for kPresenceTtl (SIGKILL, a cut cable) is dropped and its members
//                   leave for everyone. A reconnect re-reads nothing whose version held.
//   ClientNumbers   the Client N blocks from the clients counter (chat/client_numbers.hpp)
//   OutgoingBatch   one loop batch of this server's events, sealed with its "v" and "s" lines
//                   (chat/outgoing_batch.hpp)
//   history_stream  the history stream read as peer input (chat/history_stream.hpp)
// and one piece sends its own commands, as it owns a concern end to end:
//   RedisNickClaims the room-wide nick claims, reclaims and proofs (chat/redis_nick_claims.hpp)
//   RoomSigner      with --room-secret-file (issue 21), every server signs what it writes for
//                   the others and checks what they wrote (chat/room_signer.hpp); without it,
//                   the identity
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "chat/client_numbers.hpp"
#include "chat/member_mirror.hpp"
#include "chat/outgoing_batch.hpp"
#include "chat/redis_nick_claims.hpp"
#include "chat/remote_flood_gate.hpp"
#include "chat/room_bus.hpp"
#include "chat/room_signer.hpp"
#include "core/access/message_mac.hpp"
#include "core/loop/event_loop.hpp"
#include "core/redis/redis_link.hpp"

namespace mux {

class Logger;

class RedisRoomBus final : public RoomBus {
 public:
  static constexpr std::chrono::milliseconds kHeartbeat{1000};
  static constexpr std::chrono::milliseconds kPresenceTtl{4000};
  // No chat-server publishes more than a batch and its last event (three fields): a bigger
  // message on the channel was written by something else and is dropped unread.
  static constexpr std::size_t kMaxMessageBytes =
      OutgoingBatch::kMaxBytes + 4 * chat::kMaxFieldBytes;

  // `tls` matters with a rediss:// URL only.
  RedisRoomBus(EventLoop& loop, Logger& logger, RoomEvents& room, RedisUrl url,
               const TlsClientConfig& tls, const std::string& room_name, std::size_t history_limit,
               std::size_t max_line, chat::RemoteLimits limits,
               std::optional<MessageMac> mac = std::nullopt);
  RedisRoomBus(const RedisRoomBus&) = delete;
  RedisRoomBus& operator=(const RedisRoomBus&) = delete;
  ~RedisRoomBus() override;

  void start();
  // Shutdown: publishes what is pending, withdraws this server's presence, then calls `done`
  // (at once when Redis is out of reach).
  void finish(std::function<void()> done);

  [[nodiscard]] bool connected() const override { return link_.up(); }
  [[nodiscard]] bool starting() const override { return starting_; }
  void publish(const chat::RoomEvent& event) override;
  void publish_message(std::string_view name, std::string_view text) override {
    publish({chat::RoomEventKind::message, std::string(name), std::string(text), {}, false});
  }
  void admit(std::size_t history, AdmitCallback done) override;
  void claim_nick(const std::string& key, ClaimCallback done) override {
    nick_claims_.claim(key, std::move(done));
  }
  void release_nick(const std::string& key) override;
  void set_nick_proof(const std::string& key, const std::string& proof) override;
  void reclaim_nick(const std::string& key, const std::string& nick, const std::string& proof,
                    const std::string& verifier, ClaimCallback done) override {
    nick_claims_.reclaim(key, nick, proof, verifier, std::move(done));
  }
  void replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) override;
  void writer_stored(const std::string& writer, WriterCallback done) override;
  void count_writer(const std::string& writer, std::uint64_t number) override;
  [[nodiscard]] std::vector<std::string> remote_names() const override { return mirror_.names(); }
  [[nodiscard]] std::size_t remote_count() const override { return mirror_.count(); }
  [[nodiscard]] std::uint64_t highest_remote_number() const override {
    return mirror_.highest_number();
  }
  // ClientNumbers::outage_number.
  [[nodiscard]] std::optional<std::uint64_t> outage_number() override {
    return numbers_.outage_number();
  }

 private:
  void on_up();
  void on_down(const std::string& why);
  void on_attempt_failed(const std::string& why);
  // The first connection was made or failed (or took too long): newcomers who waited for it
  // are admitted through the room's counter (`up`) or with a number of the room's own.
  void end_starting(bool up);
  // Client numbers: a newcomer takes the next one in hand at once; the counter is asked for a
  // block of them (INCRBY) when none is left, and ahead of time once the room is busy.
  struct Waiting {
    std::size_t history = 0;
    AdmitCallback done;
  };
  void admit_with(std::uint64_t number, std::size_t history, AdmitCallback done);
  void request_numbers();
  void on_numbers(const RedisValue* reply, std::uint64_t size);

  void on_message(std::string_view payload);
  // A channel message that may be trusted (not oversized, well formed, verified), else nullopt
  // (logged).
  std::optional<chat::RoomBatch> accept(std::string_view payload);
  // A trusted batch to the room, without the messages the last catch-up read back already.
  void deliver(chat::RoomBatch& batch);
  // After each connection: kEpochScript says the room's epoch and reads back what this server
  // missed while its link was down; the channel's batches wait until it answers (held_), so that
  // every line reaches the clients once, in the room's order (read back, then live).
  void request_catch_up();
  void caught_up(const RedisValue& reply, std::vector<std::string> held);
  // The events that pass the remote flood control (a flood's first drop is logged).
  void drop_floods(chat::RoomBatch& batch);
  void flush();
  // flush() once this loop batch is over.
  void schedule_flush();
  void heartbeat();
  void apply_presence(const RedisValue& reply);
  // Writes this server's whole member set and a new version (after a reconnect).
  void publish_all_members();
  // The kMembersScript call at this server's version, before its "+NAME"/"-NAME" arguments;
  // `from_empty` replaces the set instead of changing it.
  [[nodiscard]] std::vector<std::string> members_script_call(bool from_empty) const;

  // Asks for server `id`'s member set and version (MemberMirror::AskSnapshot).
  bool request_snapshot(const std::string& id);
  // The verified part of a snapshot to the mirror; true when its list changed.
  bool apply_snapshot(const std::string& id, const RedisValue& reply);
  [[nodiscard]] std::string key(std::string_view suffix) const {
    return prefix_ + std::string(suffix);
  }

  EventLoop& loop_;
  Logger& logger_;
  RoomEvents& room_;  // the room it serves, told what happens elsewhere
  std::string server_id_;
  std::string room_name_;
  std::string prefix_;  // mux:room:<NAME>:
  std::size_t history_limit_;
  std::size_t max_line_;
  RedisLink link_;
  chat::RemoteFloodGate flood_gate_;
  std::size_t oversized_dropped_ = 0;  // since the last log line about them
  EventLoop::Clock::time_point oversized_logged_{};
  // --room-secret-file: signs what this server writes, verifies what the others wrote.
  RoomSigner signer_;
  // This loop batch's events, and this server's member-set version.
  OutgoingBatch outgoing_;
  // Members joined, left or were renamed here while the link was down (their events were never
  // sent): the reconnect steps the version so the others re-read this set. True until the first
  // connection.
  bool members_changed_away_ = true;
  // The writers of this batch's messages and the last number of each (count_writer), stored by
  // the publish script with them.
  std::vector<std::pair<std::string, std::uint64_t>> batch_writers_;
  static constexpr std::chrono::hours kWriterTtl{24};
  RedisNickClaims nick_claims_;
  bool flush_scheduled_ = false;
  // The other servers' members.
  MemberMirror mirror_;
  ClientNumbers numbers_;
  bool numbers_requested_ = false;
  std::deque<Waiting> waiting_;  // newcomers waiting for a number, in arrival order
  // Until the first connection is made or failed: newcomers who came meanwhile (a server just
  // restarted is reconnected to by its clients at once), and how long they may wait.
  bool starting_ = true;
  std::deque<Waiting> waiting_for_start_;
  EventLoop::TimerId start_timer_ = 0;
  static constexpr std::chrono::seconds kStartWait{3};
  std::uint64_t live_servers_ = 0;  // in the last heartbeat, this one included
  EventLoop::TimerId heartbeat_timer_ = 0;

  // The catch-up (request_catch_up): whether one is under way (its number, so that an answer
  // of an earlier connection is told apart), the channel's batches meanwhile and their bytes,
  // whether more came than it holds (then another round reads them back), and whether Redis said
  // the room's epoch before (the first time, there is nothing to catch up).
  bool catching_up_ = false;
  std::uint64_t catch_up_round_ = 0;
  std::vector<std::string> held_;
  std::size_t held_bytes_ = 0;
  bool held_overflow_ = false;
  static constexpr std::size_t kMaxHeldBytes = 64 * 1024 * 1024;
  bool had_epoch_ = false;
  // The last catch-up read the stream up to this id, in this epoch: a message of the channel
  // with an id up to it was read back (its copy on the channel may come after the answer).
  std::string read_epoch_;
  std::uint64_t read_up_to_ = 0;
  // The highest id of this server's own messages that Redis said it stored, in this epoch: a
  // link may drop before their copies come back on the channel, and the first server back
  // after Redis restarted empty says how far the lost history went (kEpochScript).
  std::string stored_epoch_;
  std::uint64_t stored_up_to_ = 0;

  bool reachable_ = true;      // as last told to the room
  bool told_failure_ = false;  // one log line per outage, not one per attempt
  bool finishing_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mux
