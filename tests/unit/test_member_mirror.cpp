// MemberMirror: another server's member list from a snapshot and then its versioned events;
// a snapshot only for a new server or a gap; the members of a server gone leave for everyone.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat/member_mirror.hpp"
#include "chat/room_bus.hpp"
#include "chat/room_event.hpp"
#include "core/base/logger.hpp"

namespace {

using mux::chat::RoomEvent;
using mux::chat::RoomEventKind;
using namespace std::chrono_literals;

constexpr auto kTtl = 4000ms;

RoomEvent joined(const std::string& name) {
  return {RoomEventKind::joined, name, "", {}, false};
}
RoomEvent left(const std::string& name) {
  return {RoomEventKind::left, name, "", {}, false};
}
RoomEvent renamed(const std::string& from, const std::string& to) {
  return {RoomEventKind::renamed, from, to, {}, false};
}
RoomEvent message(const std::string& name) {
  return {RoomEventKind::message, name, "hello", {}, false};
}

// A mirror whose snapshot requests are recorded (and can be refused, as when Redis is away).
struct Fixture {
  mux::Logger logger{mux::Verbosity::quiet};
  std::vector<std::string> asked;
  bool reachable = true;
  mux::MemberMirror mirror{logger, kTtl, [this](const std::string& id) {
                             asked.push_back(id);
                             return reachable;
                           }};
  mux::MemberMirror::Clock::time_point now = mux::MemberMirror::Clock::now();

  std::vector<std::string> names() const {
    auto names = mirror.names();
    std::sort(names.begin(), names.end());
    return names;
  }
};

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("member mirror: a new server's snapshot, with what was heard meanwhile on top") {
  Fixture f;
  // Versions 5 and 6 (the "v" line says 6 after two changes); the message is not a change.
  f.mirror.heard("a", {joined("carol"), message("carol"), left("dave")}, 6, f.now);
  CHECK(f.asked == std::vector<std::string>{"a"});
  CHECK(f.names() == Names{"carol"});  // best effort until the snapshot comes
  // The snapshot was read at version 5: it has carol already, and dave's leave is newer.
  std::vector<std::string_view> snapshot{"bob", "carol", "dave"};
  CHECK(f.mirror.snapshot("a", 5, snapshot));
  CHECK(f.names() == Names{"bob", "carol"});
  // In order: no other snapshot.
  f.mirror.heard("a", {renamed("bob", "bobby")}, 7, f.now);
  f.mirror.heard("a", {joined("Client 12")}, 8, f.now);
  CHECK(f.names() == Names{"Client 12", "bobby", "carol"});
  CHECK(f.asked.size() == 1);
  CHECK(f.mirror.count() == 3);
}

TEST_CASE("member mirror: a version gap asks for a snapshot again; old events are ignored") {
  Fixture f;
  f.mirror.heard("a", {}, std::nullopt, f.now);
  REQUIRE(f.mirror.snapshot("a", 3, {"bob"}));
  f.mirror.heard("a", {joined("bob")}, 3, f.now);  // in the snapshot already
  CHECK(f.asked.size() == 1);
  f.mirror.heard("a", {joined("erin")}, 5, f.now);  // 4 was lost
  CHECK(f.asked.size() == 2);
  CHECK(f.names() == Names{"bob", "erin"});
  REQUIRE(f.mirror.snapshot("a", 5, {"bob", "erin", "frank"}));
  CHECK(f.names() == Names{"bob", "erin", "frank"});
}

TEST_CASE(
    "member mirror: an unreadable snapshot leaves the server to its events and the heartbeat") {
  Fixture f;
  f.mirror.heard("a", {joined("bob")}, 1, f.now);
  CHECK_FALSE(f.mirror.snapshot("a", std::nullopt, {}));
  CHECK(f.names() == Names{"bob"});
  // An event while it is not synced asks again; the heartbeat then waits for that answer.
  f.mirror.heard("a", {joined("carol")}, 2, f.now);
  CHECK(f.asked == std::vector<std::string>{"a", "a"});
  CHECK(f.mirror.presence({{"a", 2}}, f.now).empty());
  CHECK(f.asked.size() == 2);
  f.mirror.snapshot_failed("a");
  CHECK(f.mirror.presence({{"a", 2}}, f.now).empty());
  CHECK(f.asked.size() == 3);
  // Out of reach: nothing pending, so the heartbeat after it asks again.
  f.reachable = false;
  f.mirror.snapshot_failed("a");
  f.mirror.presence({{"a", 2}}, f.now);
  f.mirror.presence({{"a", 2}}, f.now);
  CHECK(f.asked.size() == 5);
}

TEST_CASE("member mirror: a version in Redis ahead of the events is no reason to re-read") {
  Fixture f;
  f.mirror.heard("a", {}, std::nullopt, f.now);
  REQUIRE(f.mirror.snapshot("a", 4, {"bob"}));
  // On a busy Redis the events are seconds behind the versions a heartbeat reads: they are on
  // their way, and re-reading on that fed on itself (issue 25).
  for (int beat = 0; beat < 5; ++beat)
    CHECK(f.mirror.presence({{"a", 6}}, f.now).empty());
  CHECK(f.asked.size() == 1);
  f.mirror.heard("a", {joined("carol")}, 5, f.now);
  f.mirror.heard("a", {joined("dave")}, 6, f.now);
  CHECK(f.asked.size() == 1);
  CHECK(f.names() == Names{"bob", "carol", "dave"});
}

TEST_CASE("member mirror: a heartbeat's \"v\" line ahead of the events is a lost tail") {
  Fixture f;
  f.mirror.heard("a", {}, std::nullopt, f.now);
  REQUIRE(f.mirror.snapshot("a", 4, {"bob"}));
  // The heartbeat's batch at the version the mirror holds, or behind it: nothing was lost.
  f.mirror.heard("a", {}, 4, f.now);
  f.mirror.heard("a", {}, 3, f.now);
  f.mirror.heard("a", {message("bob")}, 4, f.now);
  CHECK(f.asked.size() == 1);
  // Ahead: the changes to 5 and 6 came before it in order, so they were lost.
  f.mirror.heard("a", {}, 6, f.now);
  CHECK(f.asked.size() == 2);
  // One snapshot per server: another "v" line meanwhile asks nothing more.
  f.mirror.heard("a", {}, 7, f.now);
  CHECK(f.asked.size() == 2);
  REQUIRE(f.mirror.snapshot("a", 7, {"bob", "carol"}));
  f.mirror.heard("a", {}, 7, f.now);
  CHECK(f.asked.size() == 2);
  CHECK(f.names() == Names{"bob", "carol"});
}

TEST_CASE("member mirror: a link back without a loss re-reads nothing; with one, that server") {
  Fixture f;
  for (const char* id : {"a", "b", "c"}) {
    f.mirror.heard(id, {}, std::nullopt, f.now);
    REQUIRE(f.mirror.snapshot(id, 2, {std::string(id) + "1"}));
  }
  f.mirror.presence({{"a", 2}, {"b", 2}, {"c", 2}}, f.now);
  REQUIRE(f.asked.size() == 3);
  // The link was lost and is back 10 s later: "a" and "b" re-registered, "c" not yet (Redis
  // restarted empty and it reconnects later): it keeps its members for the TTL.
  auto back = f.now + 10s;
  f.mirror.reconnected(back);
  CHECK(f.mirror.presence({{"a", 2}, {"b", 3}}, back).empty());
  CHECK(f.asked.size() == 3);
  CHECK(f.names() == Names{"a1", "b1", "c1"});
  // "a" says it is still at 2: nothing to read. "b" is at 3 and its change was missed.
  f.mirror.heard("a", {}, 2, back);
  f.mirror.heard("b", {}, 3, back);
  CHECK(f.asked == std::vector<std::string>{"a", "b", "c", "b"});
  // "a" goes on in order: no read.
  f.mirror.heard("a", {joined("a2")}, 3, back);
  CHECK(f.asked.size() == 4);
  // "c" was not listed within the TTL: gone.
  std::vector<RoomEvent> gone = f.mirror.presence({{"a", 3}, {"b", 3}}, back + kTtl + 1s);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].name == "c1");
}

TEST_CASE("member mirror: at most kMaxSnapshotsInFlight snapshots asked at once, in turn") {
  Fixture f;
  constexpr std::size_t kServers = mux::MemberMirror::kMaxSnapshotsInFlight + 3;
  std::unordered_map<std::string, std::uint64_t> live;
  for (std::size_t i = 0; i < kServers; ++i)
    live["s" + std::to_string(i)] = 1;
  f.mirror.presence(live, f.now);
  CHECK(f.asked.size() == mux::MemberMirror::kMaxSnapshotsInFlight);
  CHECK(f.mirror.snapshots_in_flight() == mux::MemberMirror::kMaxSnapshotsInFlight);
  // A heartbeat while they wait asks for nothing more.
  f.mirror.presence(live, f.now);
  CHECK(f.asked.size() == mux::MemberMirror::kMaxSnapshotsInFlight);
  // Each answer (or failure) lets the next one be asked for.
  std::string first = f.asked[0];
  REQUIRE(f.mirror.snapshot(first, 1, {"x"}));
  CHECK(f.asked.size() == mux::MemberMirror::kMaxSnapshotsInFlight + 1);
  std::string failed = f.asked[1];
  f.mirror.snapshot_failed(failed);
  CHECK(f.asked.size() == mux::MemberMirror::kMaxSnapshotsInFlight + 2);
  // Answer all: every server asked for exactly once, except the failed one (asked by the next
  // heartbeat).
  for (std::size_t i = 2; i < f.asked.size(); ++i) {
    std::string id = f.asked[i];
    f.mirror.snapshot(id, 1, {});
  }
  CHECK(f.asked.size() == kServers);
  CHECK(f.mirror.snapshots_in_flight() == 0);
  std::vector<std::string> unique = f.asked;
  std::sort(unique.begin(), unique.end());
  CHECK(std::unique(unique.begin(), unique.end()) == unique.end());
  f.mirror.presence(live, f.now);
  CHECK(f.asked.size() == kServers + 1);
  CHECK(f.asked.back() == failed);
}

TEST_CASE("member mirror: the members of a server gone leave, a new one waits its TTL") {
  Fixture f;
  f.mirror.heard("a", {}, std::nullopt, f.now);
  REQUIRE(f.mirror.snapshot("a", 2, {"bob", "Client 3"}));
  f.mirror.presence({{"a", 2}}, f.now);
  // "b" speaks before any heartbeat lists it.
  f.mirror.heard("b", {joined("carol")}, std::nullopt, f.now);
  std::vector<RoomEvent> gone = f.mirror.presence({}, f.now + 1s);
  REQUIRE(gone.size() == 2);
  std::vector<std::string> left_names{gone[0].name, gone[1].name};
  std::sort(left_names.begin(), left_names.end());
  CHECK(left_names == Names{"Client 3", "bob"});
  CHECK(gone[0].kind == RoomEventKind::left);
  CHECK(gone[0].text == "server gone");
  CHECK(f.names() == Names{"carol"});
  gone = f.mirror.presence({}, f.now + kTtl + 1s);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].name == "carol");
  CHECK(f.mirror.count() == 0);
}

TEST_CASE("member mirror: the highest Client N seen elsewhere outlives an outage") {
  Fixture f;
  f.mirror.heard("a", {joined("Client 7"), renamed("Client 7", "Client 40")}, 2, f.now);
  REQUIRE(f.mirror.snapshot("a", 0, {"Client 9"}));
  CHECK(f.mirror.highest_number() == 40);
  // Numbers a server hands out on its own while Redis is away never raise it.
  std::string own = "Client " + std::to_string(mux::RoomBus::kOwnNumbersFrom + 5);
  f.mirror.heard("a", {joined(own)}, 3, f.now);
  CHECK(f.mirror.highest_number() == 40);
  // Redis restarted empty: "a" never comes back, and its members leave; the number stays.
  f.mirror.reconnected(f.now);
  CHECK(f.mirror.presence({}, f.now + kTtl + 1s).size() == 3);  // Client 9, 40 and its own
  CHECK(f.mirror.count() == 0);
  CHECK(f.mirror.highest_number() == 40);
}
