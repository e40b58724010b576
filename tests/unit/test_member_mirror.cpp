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

TEST_CASE("member mirror: a version in Redis that the events never reach asks for a snapshot") {
  Fixture f;
  f.mirror.heard("a", {}, std::nullopt, f.now);
  REQUIRE(f.mirror.snapshot("a", 4, {"bob"}));
  CHECK(f.mirror.presence({{"a", 6}}, f.now).empty());
  CHECK(f.asked.size() == 1);  // one heartbeat later events may still be on their way
  CHECK(f.mirror.presence({{"a", 6}}, f.now).empty());
  CHECK(f.asked.size() == 2);  // they were lost
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
  f.mirror.clear();
  CHECK(f.mirror.count() == 0);
  CHECK(f.mirror.highest_number() == 40);
}
