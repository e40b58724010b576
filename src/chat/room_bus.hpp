// The seam between a chat room and the other servers sharing it, both ways:
// - RoomBus: what the room needs from them — a way to send them this server's events, the
//   room-wide client counter, room-wide nick claims, the members on the other servers, and the
//   shared history. The room calls it. RedisRoomBus is the one that reaches other servers;
//   without --redis the room has a NullRoomBus, so the room never asks whether it has a bus.
// - RoomEvents: what a bus reports to the room it serves (events from the other servers, their
//   going out of reach and back, the room's message ids) and the little it asks of it. ChatRoom
//   implements it; a bus never sees the concrete room, so unit tests drive the room through a
//   fake bus (tests/unit/test_room_bus.cpp).
// Every answer is asynchronous; a callback gets nullopt when the other servers could not answer
// (out of reach), and the room then carries on on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chat/room_event.hpp"

namespace mux {

// One line of history: when (UTC seconds), who, what.
struct HistoryEntry {
  std::int64_t unix_seconds = 0;
  std::string name;
  std::string text;
  std::uint64_t id = 0;  // the room's message id (0: none, said while the ids were unknown)
};

class RoomBus {
 public:
  struct Admission {
    std::uint64_t number = 0;           // from the room-wide counter
    std::vector<HistoryEntry> history;  // oldest first
  };
  using AdmitCallback = std::function<void(std::optional<Admission>)>;
  using ClaimCallback = std::function<void(std::optional<bool> claimed)>;
  using ReplayCallback = std::function<void(std::optional<std::vector<HistoryEntry>>)>;

  RoomBus() = default;
  RoomBus(const RoomBus&) = delete;
  RoomBus& operator=(const RoomBus&) = delete;
  virtual ~RoomBus() = default;

  // True when other servers may share the room (then the room's message ids come from the bus).
  [[nodiscard]] virtual bool shared() const { return true; }
  // True while the other servers can be reached.
  [[nodiscard]] virtual bool connected() const = 0;
  // True while the bus's first connection is still being made: a newcomer then waits for it
  // (admit() answers once it is made or failed) rather than take a number of the room's own
  // count, which the other servers may already have given.
  [[nodiscard]] virtual bool starting() const { return false; }
  // A local event for the other servers (events of one loop batch travel together).
  virtual void publish(const chat::RoomEvent& event) = 0;
  // A local message: publish() of a message event, without building one when nobody listens.
  virtual void publish_message(std::string_view name, std::string_view text) = 0;
  // A newcomer's number, and the last `history` messages when history > 0.
  virtual void admit(std::size_t history, AdmitCallback done) = 0;
  // Claims the nick look-alike `key` room-wide for this server.
  virtual void claim_nick(const std::string& key, ClaimCallback done) = 0;
  virtual void release_nick(const std::string& key) = 0;
  // Reconnect secrets across servers (issue 23): `proof` (a digest of the secret of the session
  // holding nick `key` here) is what a reclaim on another server must match; never the secret.
  virtual void set_nick_proof(const std::string& /*key*/, const std::string& /*proof*/) {}
  // claim_nick, except that a nick held on another live server for a session whose stored proof
  // is `proof` is taken from it at once, and that server is told (with `verifier`, which it
  // checks against its session's own secret) to end its ghost.
  virtual void reclaim_nick(const std::string& key, const std::string& /*nick*/,
                            const std::string& /*proof*/, const std::string& /*verifier*/,
                            ClaimCallback done) {
    claim_nick(key, std::move(done));
  }
  // The kept messages with room-wide ids in (after, up_to], oldest first, at most --history of
  // them; nullopt when there is no shared history or it could not be read.
  virtual void replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) = 0;
  // "/cap acks WRITER" (issue 23): how many messages of `writer` (its key's digest) the room
  // stored, counted by every server that published one (0: none); nullopt when it cannot be read.
  using WriterCallback = std::function<void(std::optional<std::uint64_t>)>;
  virtual void writer_stored(const std::string& /*writer*/, WriterCallback done) {
    done(std::nullopt);
  }
  // The next publish_message is message `number` of `writer`: stored with it.
  virtual void count_writer(const std::string& /*writer*/, std::uint64_t /*number*/) {}
  // The names on the other servers, in no particular order.
  [[nodiscard]] virtual std::vector<std::string> remote_names() const = 0;
  // How many they are (without building the list).
  [[nodiscard]] virtual std::size_t remote_count() const = 0;
  // The highest N of a "Client N" seen on the other servers (0: none): a number the room hands
  // out on its own while they are out of reach must be above it.
  [[nodiscard]] virtual std::uint64_t highest_remote_number() const = 0;
  // While the others are out of reach: a number no other server hands out meanwhile, if the bus
  // has one (nullopt: the room takes the next above every number it knows, as before).
  [[nodiscard]] virtual std::optional<std::uint64_t> outage_number() { return std::nullopt; }
  // Such numbers are at least this: the room's counter never gets there, and they never raise
  // it (a re-seed after an outage would carry the counter into them).
  static constexpr std::uint64_t kOwnNumbersFrom = 1'000'000'000;
};

// The bus of a room that no other server shares: nobody to tell, nothing to ask. Never
// connected, so the room hands out numbers, nicks and message ids on its own and never waits.
class NullRoomBus final : public RoomBus {
 public:
  [[nodiscard]] bool shared() const override { return false; }
  [[nodiscard]] bool connected() const override { return false; }
  void publish(const chat::RoomEvent& /*event*/) override {}
  void publish_message(std::string_view /*name*/, std::string_view /*text*/) override {}
  void admit(std::size_t /*history*/, AdmitCallback done) override { done(std::nullopt); }
  void claim_nick(const std::string& /*key*/, ClaimCallback done) override { done(std::nullopt); }
  void release_nick(const std::string& /*key*/) override {}
  void replay(std::uint64_t /*after*/, std::uint64_t /*up_to*/, ReplayCallback done) override {
    done(std::nullopt);
  }
  [[nodiscard]] std::vector<std::string> remote_names() const override { return {}; }
  [[nodiscard]] std::size_t remote_count() const override { return 0; }
  [[nodiscard]] std::uint64_t highest_remote_number() const override { return 0; }
};

// What a RoomBus reports to its room, and asks of it. Called from the bus's callbacks on the
// room's loop, never while the room is calling the bus.
class RoomEvents {
 public:
  // Events that happened on the other servers, in order.
  virtual void apply_remote(const std::vector<chat::RoomEvent>& events) = 0;
  // A room whose messages are numbered room-wide (issue 23): the room's epoch and last id at
  // (re)connect, and how many lines this server missed while its link was down that it could
  // not read back (0: none known; every member is told); a batch's epoch; this server's own
  // batch back, numbered. After a reconnect the lines it could read back come next, as
  // apply_remote (and own_messages_numbered for its own).
  virtual void room_epoch(const std::string& epoch, std::uint64_t last, std::uint64_t missed) = 0;
  virtual void batch_epoch(const std::string& epoch,
                           const std::vector<chat::RoomEvent>& events) = 0;
  virtual void own_messages_numbered(const std::vector<chat::RoomEvent>& events) = 0;
  // Redis answered the publishing of this server's next `count` messages (in publish order):
  // their ids count from `first_id`, or 0 when they were not stored (Redis out of reach).
  virtual void messages_stored(std::uint64_t first_id, std::size_t count) = 0;
  // A session of this server holding `nick` was taken over by its reconnect on another server;
  // `verifier` proves it (the room checks it against that session's secret before ending it).
  virtual void reclaimed_elsewhere(const std::string& nick, const std::string& verifier) = 0;
  // The other servers' member list changed without events (a re-sync).
  virtual void remote_members_changed() = 0;
  // The other servers went out of reach, or came back.
  virtual void bus_reachable(bool reachable) = 0;
  // This server's members and claimed nick keys (the bus re-publishes them after a reconnect).
  [[nodiscard]] virtual std::vector<std::string> local_names() const = 0;
  [[nodiscard]] virtual std::vector<std::string> local_nick_keys() const = 0;
  // The proofs of the sessions holding them that have a reconnect secret: {key, proof}.
  [[nodiscard]] virtual std::vector<std::pair<std::string, std::string>> local_nick_proofs()
      const = 0;
  // The highest "Client N" number this room has handed out (the bus re-seeds the room-wide
  // counter above it when Redis comes back empty).
  [[nodiscard]] virtual std::uint64_t highest_number() const = 0;
  // This room's epoch and the id of its last message (the bus offers them to Redis).
  [[nodiscard]] virtual const std::string& epoch() const = 0;
  [[nodiscard]] virtual std::uint64_t last_id() const = 0;
  // Members on this server, and whether a room of `members` (all servers) announces joins,
  // leaves and renames (the bus spares those from its flood gate when it does not).
  [[nodiscard]] virtual std::size_t size() const = 0;
  [[nodiscard]] virtual bool announces(std::size_t members) const = 0;

 protected:
  ~RoomEvents() = default;
};

}  // namespace mux
