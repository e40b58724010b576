// ChatRoom driven through a fake RoomBus, without Redis: the numbers it hands
// out, room-wide nick claims, lines held while an answer travels, what it
// publishes, other servers' events and their outages, all as the room's
// RoomEvents sees them.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chat/chat_room.hpp"
#include "chat/room_bus.hpp"
#include "core/base/logger.hpp"

namespace {

using mux::chat::RoomEvent;
using mux::chat::RoomEventKind;

struct Member final : mux::ChatMember {
  std::string received;
  bool closing = false;
  int pauses = 0;

  void deliver(const mux::Block& block) override { received += *block; }
  void close_after_output() override { closing = true; }
  void pause_input(std::chrono::milliseconds /*pause*/) override { ++pauses; }
  std::string take() { return std::exchange(received, {}); }
};

// The other servers, played by the test: it answers admissions and claims when
// it chooses, says who is elsewhere, and reports through the room's RoomEvents
// as RedisRoomBus does.
struct FakeBus final : mux::RoomBus {
  bool up = true;
  std::vector<AdmitCallback> admissions;
  std::vector<std::pair<std::string, ClaimCallback>> claims;
  std::vector<std::string> released;
  std::vector<RoomEvent> published;
  std::vector<std::string> elsewhere;
  std::uint64_t highest_elsewhere = 0;

  [[nodiscard]] bool connected() const override { return up; }
  void publish(const RoomEvent& event) override { published.push_back(event); }
  void publish_message(std::string_view name, std::string_view text) override {
    published.push_back({RoomEventKind::message, std::string(name), std::string(text), {}, false});
  }
  void admit(std::size_t /*history*/, AdmitCallback done) override {
    admissions.push_back(std::move(done));
  }
  void claim_nick(const std::string& key, ClaimCallback done) override {
    claims.emplace_back(key, std::move(done));
  }
  void release_nick(const std::string& key) override { released.push_back(key); }
  void replay(std::uint64_t /*after*/, std::uint64_t /*up_to*/, ReplayCallback done) override {
    done(std::nullopt);
  }
  [[nodiscard]] std::vector<std::string> remote_names() const override { return elsewhere; }
  [[nodiscard]] std::size_t remote_count() const override { return elsewhere.size(); }
  [[nodiscard]] std::uint64_t highest_remote_number() const override { return highest_elsewhere; }

  void answer_admission(std::optional<std::uint64_t> number) {
    auto done = std::move(admissions.front());
    admissions.erase(admissions.begin());
    if (number) {
      done(Admission{*number, {}});
    } else {
      done(std::nullopt);
    }
  }
  void answer_claim(std::optional<bool> claimed) {
    auto done = std::move(claims.front().second);
    claims.erase(claims.begin());
    done(claimed);
  }
  std::vector<RoomEvent> take_published() { return std::exchange(published, {}); }
};

struct BusRoom {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::ChatRoom room{logger, 4096};
  FakeBus bus;
  mux::RoomEvents& events = room;  // what the bus sees of the room
  std::vector<std::unique_ptr<Member>> members;

  BusRoom() { room.set_bus(&bus); }
  Member& join(std::optional<std::uint64_t> number) {
    members.push_back(std::make_unique<Member>());
    room.join(*members.back(), "test");
    if (bus.up) bus.answer_admission(number);
    return *members.back();
  }
  void say(Member& sender, std::string_view line) {
    room.receive_line(sender, line, false);
    room.end_of_input();
  }
};

std::string kinds(const std::vector<RoomEvent>& events) {
  std::string out;
  for (const RoomEvent& event : events)
    out += static_cast<char>(event.kind);
  return out;
}

}  // namespace

TEST_CASE_FIXTURE(BusRoom, "numbers come from the bus; out of reach, the room counts above them") {
  Member& a = join(41);
  CHECK(a.name() == "Client 41");
  Member& b = join(std::nullopt);  // no answer: a number of its own, above what it knows
  CHECK(b.name() == "Client 42");
  bus.highest_elsewhere = 90;
  bus.up = false;
  Member& c = join(std::nullopt);  // not even asked: the bus is not connected
  CHECK(bus.admissions.empty());
  CHECK(c.name() == "Client 91");
  CHECK(events.highest_number() == 91);
  CHECK(events.local_names() == std::vector<std::string>{"Client 41", "Client 42", "Client 91"});
}

TEST_CASE_FIXTURE(BusRoom, "joins, messages, renames and leaves are published in order") {
  Member& a = join(1);
  say(a, "hello");
  say(a, "/nick ann");
  REQUIRE(bus.claims.size() == 1);
  bus.answer_claim(true);
  CHECK(room.leave(a, "quit", false));
  std::vector<RoomEvent> published = bus.take_published();
  CHECK(kinds(published) == "jmrl");
  CHECK(published[1].name == "Client 1");
  CHECK(published[1].text == "hello");
  CHECK(published[2].text == "ann");
  CHECK(published[3].name == "ann");
  CHECK(published[3].text == "quit");
  // Its nick key goes back to the room when it leaves.
  CHECK(bus.released.size() == 1);
}

TEST_CASE_FIXTURE(BusRoom, "a nick taken on another server is refused; the claim is its key") {
  Member& a = join(1);
  Member& watcher = join(2);
  a.take(), watcher.take();
  say(a, "/nick Zoë");
  REQUIRE(bus.claims.size() == 1);
  std::string key = bus.claims.front().first;
  bus.answer_claim(false);
  CHECK(a.take() == "* nick Zoë is taken\n");
  CHECK(watcher.take() == "");
  CHECK(a.name() == "Client 1");
  // Claimed room-wide, then renamed away: the old key goes back.
  say(a, "/nick zoe2");
  bus.answer_claim(true);
  CHECK(a.name() == "zoe2");
  CHECK(events.local_nick_keys().size() == 1);
  say(a, "/nick zed");
  bus.answer_claim(true);
  CHECK(bus.released.size() == 1);
  CHECK(events.local_nick_keys().size() == 1);
  CHECK(key != bus.released.front());  // the refused key was never ours to release
}

TEST_CASE_FIXTURE(BusRoom, "a claim answered after its member left gives the nick back") {
  Member& a = join(1);
  say(a, "/nick late");
  REQUIRE(bus.claims.size() == 1);
  std::string key = bus.claims.front().first;
  // Its connection is gone before the answer (no lines were held, so it leaves
  // at once).
  CHECK(room.leave(a, "reset", false));
  room.gone(a);
  CHECK(bus.released.empty());
  bus.answer_claim(true);
  CHECK(bus.released == std::vector<std::string>{key});
  CHECK(events.local_nick_keys().empty());
  CHECK(room.size() == 0);
}

TEST_CASE_FIXTURE(BusRoom, "an unanswered claim (out of reach) renames on this server's word") {
  Member& a = join(1);
  say(a, "/nick solo");
  bus.answer_claim(std::nullopt);
  CHECK(a.name() == "solo");
}

TEST_CASE_FIXTURE(BusRoom, "lines sent while the number travels are held, then relayed") {
  Member& watcher = join(1);
  watcher.take();
  members.push_back(std::make_unique<Member>());
  Member& early = *members.back();
  room.join(early, "test");
  say(early, "first");
  say(early, "second");
  CHECK(early.pauses == 2);
  CHECK(bus.take_published().size() == 1);  // the watcher's join only
  bus.answer_admission(7);
  CHECK(watcher.take() == "* Client 7 joined\n[Client 7]: first\n[Client 7]: second\n");
  CHECK(kinds(bus.take_published()) == "jmm");
}

TEST_CASE_FIXTURE(BusRoom, "other servers' events reach every member here") {
  Member& a = join(1);
  Member& b = join(2);
  a.take(), b.take();
  events.apply_remote({{RoomEventKind::joined, "Client 9", {}, {}, false},
                       {RoomEventKind::message, "Client 9", "from afar", {}, false},
                       {RoomEventKind::renamed, "Client 9", "nine", {}, false},
                       {RoomEventKind::left, "nine", "quit", {}, false}});
  std::string expected =
      "* Client 9 joined\n[Client 9]: from afar\n* Client 9 "
      "is now nine\n* nine left\n";
  CHECK(a.take() == expected);
  CHECK(b.take() == expected);
  CHECK(bus.published.size() == 2);  // nothing heard from the bus goes back to it
}

TEST_CASE_FIXTURE(BusRoom, "an outage is told to everyone, newcomers included, and /who shrinks") {
  Member& a = join(1);
  bus.elsewhere = {"remote-one", "Client 5"};
  events.remote_members_changed();
  a.take();
  say(a, "/who");
  CHECK(a.take() == "* online (3): Client 1, Client 5, remote-one\n");
  events.bus_reachable(false);
  CHECK(a.take() ==
        "* the other servers are out of reach: only this server's "
        "clients hear you for now\n");
  say(a, "/who");
  CHECK(a.take() == "* online (1): Client 1\n");
  bus.up = false;
  Member& b = join(std::nullopt);
  CHECK(b.take() ==
        "* welcome, you are Client 2 (type /help for commands)\n"
        "* the other servers are out of reach: only this server's "
        "clients hear you for now\n");
  a.take();
  events.bus_reachable(false);  // said once
  CHECK(a.take() == "");
  events.bus_reachable(true);
  CHECK(a.take() == "* the other servers are back: the room is whole again\n");
  CHECK(b.take() == "* the other servers are back: the room is whole again\n");
}

TEST_CASE("a room without a bus hands out its own numbers and publishes nowhere") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::ChatRoom room{logger, 4096};
  Member a;
  Member b;
  room.join(a, "test");
  room.join(b, "test");
  CHECK(a.name() == "Client 1");
  CHECK(b.name() == "Client 2");
  room.receive_line(a, "/nick solo", false);
  room.end_of_input();
  CHECK(a.name() == "solo");  // no claim to wait for
  room.set_bus(nullptr);      // back to no bus at all
  room.receive_line(b, "still here", false);
  room.end_of_input();
  CHECK(a.take().ends_with("[Client 2]: still here\n"));
}
