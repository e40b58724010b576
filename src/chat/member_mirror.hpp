// MemberMirror: this server's copy of the member list of every other server of a Redis room, so
// /who, the room's size and a newcomer's number never wait for Redis. Presence costs O(changes),
// not O(members): each server's joins, leaves and renames reach the others as events, each one
// version step of its member set. A mirror is built from a snapshot (that server's set and
// version, read atomically) and then from the events in version order. A snapshot is asked for
// only for a server not seen before, or on a gap: an event whose version is not the next one (a
// message lost while a subscriber reconnected), or a batch whose "v" line is ahead of what its
// events brought (the last events lost, with nothing after them to show the gap: every server
// publishes its version once per heartbeat, after all its earlier batches, and pub/sub keeps
// their order, so a "v" line ahead is a loss, never a delay). The versions a heartbeat reads
// from Redis are not compared: the events may be seconds behind them on a busy Redis, and
// re-reading on that (issue 25: 31,837 whole-set reads at 1,000,000 clients) fed on itself.
// The mirror outlives a lost link: the versions tell on reconnect what was missed, so a server
// whose link came back without a loss costs Redis no read at all; at most kMaxSnapshotsInFlight
// snapshots are asked for at once (the rest wait their turn), one per server.
// A server the heartbeat no longer lists is gone, and its members leave for everyone here.
// It also remembers the highest "Client N" it ever saw elsewhere, across outages: a Redis that
// comes back empty has lost the counter, which is re-seeded above it.
// No I/O: the bus asks Redis for the snapshots it requests and hands it what comes back.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/name_set.hpp"
#include "chat/room_event.hpp"

namespace mux {

class Logger;

class MemberMirror {
 public:
  using Clock = std::chrono::steady_clock;
  // Membership events kept per server while its snapshot travels; past it the snapshot is
  // followed by a gap, and another snapshot.
  static constexpr std::size_t kMaxHeardMeanwhile = 100'000;
  // Snapshots asked for and not yet answered, room-wide: a burst of them (a Redis restarted, many
  // servers new at once) is spread instead of landing on Redis together.
  static constexpr std::size_t kMaxSnapshotsInFlight = 4;
  // Asks for server `id`'s snapshot; false when it could not be asked (out of reach): the next
  // heartbeat asks again, since the mirror is not synced.
  using AskSnapshot = std::function<bool(const std::string& id)>;

  // `presence_ttl`: how long a server whose events came before its first heartbeat listing is
  // taken as alive.
  MemberMirror(Logger& logger, std::chrono::milliseconds presence_ttl, AskSnapshot ask);

  // A batch from server `id`: its events in order, and its "v" line (the version after them; a
  // batch may carry the "v" line alone, as every heartbeat's does).
  void heard(const std::string& id, const std::vector<chat::RoomEvent>& events,
             std::optional<std::uint64_t> members_version, Clock::time_point now);
  // A snapshot of server `id` came: its version (nullopt: none, or unreadable; the server's
  // events alone then build its list) and its names. True when the list changed.
  bool snapshot(const std::string& id, std::optional<std::uint64_t> version,
                const std::vector<std::string_view>& names);
  // The snapshot could not be read: asked again at the next heartbeat.
  void snapshot_failed(const std::string& id);
  // The servers a heartbeat listed (with the version Redis holds for each, not used to decide a
  // re-read: see above). Asks again for a server not synced; returns a "left" event for every
  // member of the servers gone.
  std::vector<chat::RoomEvent> presence(const std::unordered_map<std::string, std::uint64_t>& live,
                                        Clock::time_point now);
  // The link to Redis is back: what is mirrored stays (the versions show what was missed), and
  // every server gets the TTL to be listed again (a Redis restarted empty lists them as they
  // reconnect) before it counts as gone.
  void reconnected(Clock::time_point now);

  [[nodiscard]] std::vector<std::string> names() const;
  [[nodiscard]] std::size_t count() const;
  [[nodiscard]] std::uint64_t highest_number() const noexcept { return highest_number_; }
  [[nodiscard]] std::size_t snapshots_in_flight() const noexcept { return in_flight_; }

 private:
  struct Server {
    chat::NameSet names;            // compact: most are "Client N" (one bit each)
    std::uint64_t version = 0;      // names hold every change up to this version...
    bool synced = false;            // ...when this is true
    bool snapshot_pending = false;  // a snapshot is asked for, or waits its turn...
    bool snapshot_asked = false;    // ...and this one is asked for (in flight)
    // Membership events (with their versions) heard while the snapshot travels: those newer than
    // the snapshot are applied on top of it.
    std::vector<std::pair<std::uint64_t, chat::RoomEvent>> heard_meanwhile;
    bool was_live = false;  // listed by a heartbeat (since the link was last back)
    Clock::time_point last_heard{};
  };
  Server& server(const std::string& id, Clock::time_point now);
  void request_snapshot(const std::string& id, Server& server);
  void ask(const std::string& id, Server& server);
  bool accept_snapshot(const std::string& id, std::optional<std::uint64_t> version,
                       const std::vector<std::string_view>& names);
  // An asked snapshot was answered (or failed): the next one waiting its turn is asked for.
  void answered();
  // One membership event; `version` 0: not versioned (applied as it comes).
  void apply(const std::string& id, Server& server, std::uint64_t version,
             const chat::RoomEvent& event);
  static void change_names(Server& server, const chat::RoomEvent& event);
  // Keeps highest_number_ above `name` when it is a "Client N" of the room's counter.
  void note_name(std::string_view name);

  Logger& logger_;
  std::chrono::milliseconds presence_ttl_;
  AskSnapshot ask_;
  std::unordered_map<std::string, Server> servers_;  // by server id
  std::size_t in_flight_ = 0;
  std::deque<std::string> turns_;  // servers waiting for their snapshot to be asked for
  std::uint64_t highest_number_ = 0;
};

}  // namespace mux
