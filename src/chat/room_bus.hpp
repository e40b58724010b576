// RoomBus: what a ChatRoom needs from the other servers sharing its room — a way to send them
// this server's events, the room-wide client counter, room-wide nick claims, the members on the
// other servers, and the shared history. The room calls it; an implementation (RedisRoomBus)
// calls back into the room (ChatRoom::apply_remote and friends). Without --redis there is none.
// Every answer is asynchronous; a callback gets nullopt when the other servers could not answer
// (out of reach), and the room then carries on on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
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

  // True while the other servers can be reached.
  [[nodiscard]] virtual bool connected() const = 0;
  // A local event for the other servers (events of one loop batch travel together).
  virtual void publish(const chat::RoomEvent& event) = 0;
  // A newcomer's number, and the last `history` messages when history > 0.
  virtual void admit(std::size_t history, AdmitCallback done) = 0;
  // Claims the nick look-alike `key` room-wide for this server.
  virtual void claim_nick(const std::string& key, ClaimCallback done) = 0;
  virtual void release_nick(const std::string& key) = 0;
  // The kept messages with room-wide ids in (after, up_to], oldest first, at most --history of
  // them; nullopt when there is no shared history or it could not be read.
  virtual void replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) = 0;
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

}  // namespace mux
