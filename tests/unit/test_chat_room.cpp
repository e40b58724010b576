// ChatRoom with fake members: who hears what, in which order.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "chat/chat_room.hpp"
#include "core/base/logger.hpp"

namespace {

struct FakeMember final : mux::ChatMember {
  std::string received;
  int deliveries = 0;
  bool closing = false;

  void deliver(const mux::Block& block) override {
    received += *block;
    ++deliveries;
  }
  void close_after_output() override { closing = true; }
  void pause_input(std::chrono::milliseconds pause) override {
    paused += pause;
    ++pauses;
  }
  std::chrono::milliseconds paused{0};
  int pauses = 0;
  std::string take() { return std::exchange(received, {}); }
};

struct RoomFixture {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::ChatRoom room{logger, 4096};
  std::vector<std::unique_ptr<FakeMember>> members;

  FakeMember& join() {
    members.push_back(std::make_unique<FakeMember>());
    room.join(*members.back(), "test");
    return *members.back();
  }
  void say(FakeMember& sender, std::string_view line) {
    room.receive_line(sender, line, false);
    room.end_of_input();
  }
};

// The text with every " secret=HEX" (a random reconnect secret) taken out.
std::string no_secret(std::string text) {
  for (std::size_t at; (at = text.find(" secret=")) != std::string::npos;)
    text.erase(at, 8 + mux::chat::kSecretChars);
  return text;
}

// The reconnect secret in a /cap ids answer.
std::string secret_in(const std::string& text) {
  std::size_t at = text.find(" secret=");
  REQUIRE(at != std::string::npos);
  return text.substr(at + 8, mux::chat::kSecretChars);
}

}  // namespace

TEST_CASE_FIXTURE(RoomFixture, "a newcomer is welcomed and the others are told") {
  FakeMember& first = join();
  CHECK(first.take() == "* welcome, you are Client 1 (type /help for commands)\n");
  FakeMember& second = join();
  CHECK(second.take() == "* welcome, you are Client 2 (type /help for commands)\n");
  CHECK(first.take() == "* Client 2 joined\n");
}

TEST_CASE_FIXTURE(RoomFixture, "a message goes to everyone but its sender") {
  FakeMember& a = join();
  FakeMember& b = join();
  FakeMember& c = join();
  a.take(), b.take(), c.take();
  say(b, "hello");
  CHECK(a.take() == "[Client 2]: hello\n");
  CHECK(b.take() == "");
  CHECK(c.take() == "[Client 2]: hello\n");
}

TEST_CASE_FIXTURE(RoomFixture,
                  "the messages of one chunk reach each receiver as one block, in order") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  int before = b.deliveries;
  room.receive_line(a, "one", false);
  room.receive_line(a, "two", false);
  room.receive_line(a, "/who", false);  // a command in between keeps its place
  room.receive_line(a, "three", false);
  room.end_of_input();
  CHECK(b.take() == "[Client 1]: one\n[Client 1]: two\n[Client 1]: three\n");
  CHECK(b.deliveries - before == 2);
  CHECK(a.take() == "* online (2): Client 1, Client 2\n");
}

TEST_CASE_FIXTURE(RoomFixture, "empty lines are not relayed") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  say(a, "");
  CHECK(b.take() == "");
}

TEST_CASE_FIXTURE(RoomFixture, "/nick renames, tells everyone and keeps names unique") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  say(a, "/nick alice");
  CHECK(a.take() == "* Client 1 is now alice\n");
  CHECK(b.take() == "* Client 1 is now alice\n");
  say(b, "/nick ALICE");
  CHECK(b.take() == "* nick ALICE is taken\n");
  say(a, "/nick Alice");  // the owner may change the case of its own name
  CHECK(a.take() == "* alice is now Alice\n");
  CHECK(b.take() == "* alice is now Alice\n");
  say(a, "/nick Alice");
  CHECK(a.take() == "* you are already Alice\n");
  say(b, "/nick");
  CHECK(b.take() == "* usage: /nick NAME\n");
  say(b, "/nick two words");
  CHECK(b.take() == "* invalid nick 'two words': no spaces or invisible characters\n");
  say(b, "hi");
  CHECK(a.take() == "[Client 2]: hi\n");
}

TEST_CASE_FIXTURE(RoomFixture, "a nick is free again once its owner leaves or renames") {
  FakeMember& a = join();
  FakeMember& b = join();
  say(a, "/nick alice");
  say(a, "/nick alicia");
  b.take();
  say(b, "/nick alice");
  CHECK(b.take() == "* Client 2 is now alice\n");
  room.leave(a, "test", false);
  CHECK(b.take() == "* alicia left\n");
  say(b, "/nick alicia");
  CHECK(b.take() == "* alice is now alicia\n");
}

TEST_CASE_FIXTURE(RoomFixture, "/who in a big room names the first 100; /who TEXT finds names") {
  for (int i = 0; i < 150; ++i)
    join();
  FakeMember& last = *members.back();
  last.take();
  say(last, "/who");
  std::string first = "Client 1";
  for (int i = 2; i <= 100; ++i)
    first += fmt::format(", Client {}", i);
  CHECK(last.take() ==
        fmt::format("* online (150, first 100 shown; /who TEXT finds names): {}\n", first));
  say(last, "/who client 14");
  CHECK(last.take() ==
        "* online with \"client 14\" (11): Client 14, Client 140, Client 141, "
        "Client 142, Client 143, Client 144, Client 145, Client 146, Client 147, "
        "Client 148, Client 149\n");
  say(last, "/who zed");
  CHECK(last.take() == "* nobody online has \"zed\" in their name\n");
}

TEST_CASE_FIXTURE(
    RoomFixture, "/who lists names in arrival order, /help and unknown commands answer the asker") {
  FakeMember& a = join();
  FakeMember& b = join();
  FakeMember& c = join();
  say(c, "/nick carol");
  room.leave(a, "test", false);
  FakeMember& d = join();
  b.take(), c.take(), d.take();
  say(d, "/who");
  CHECK(d.take() == "* online (3): Client 2, carol, Client 4\n");
  say(d, "/help");
  CHECK(d.take().rfind("* commands: /nick NAME", 0) == 0);
  say(d, "/dance");
  CHECK(d.take() == "* unknown command /dance (try /help)\n");
  CHECK(b.take() == "");
  CHECK(c.take() == "");
}

TEST_CASE_FIXTURE(RoomFixture, "/quit leaves, tells the others and asks the member to close") {
  FakeMember& a = join();
  FakeMember& b = join();
  say(a, "/nick alice");
  a.take(), b.take();
  say(a, "/quit");
  CHECK(a.closing);
  CHECK_FALSE(a.in_room());
  CHECK(b.take() == "* alice left\n");
  say(b, "anyone?");
  CHECK(a.take() == "");
  room.leave(a, "again", false);  // a second leave is a no-op
  CHECK(b.take() == "");
}

TEST_CASE_FIXTURE(RoomFixture, "a too-slow leave says so, and pending messages go out first") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  room.receive_line(a, "last words", false);
  room.leave(a, "too slow", true);
  CHECK(b.take() == "[Client 1]: last words\n* Client 1 left (too slow)\n");
}

TEST_CASE_FIXTURE(RoomFixture, "a cut line is relayed and its sender told") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  room.receive_line(a, "xxxx", true);
  room.end_of_input();
  CHECK(a.take() == "* line too long: cut at 4096 bytes, the rest was dropped\n");
  CHECK(b.take() == "[Client 1]: xxxx\n");
}

TEST_CASE_FIXTURE(RoomFixture,
                  "close_all tells everyone once and asks all to close, without leave notices") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  room.close_all();
  CHECK(a.take() == "* server shutting down\n");
  CHECK(b.take() == "* server shutting down\n");
  CHECK(a.closing);
  CHECK(b.closing);
  CHECK(room.size() == 0);
}

TEST_CASE_FIXTURE(RoomFixture, "presence is announced only in rooms up to kAnnounceUpTo members") {
  for (std::size_t i = 0; i < mux::ChatRoom::kAnnounceUpTo; ++i)
    join();
  FakeMember& first = *members.front();
  first.take();
  FakeMember& late = join();  // member kAnnounceUpTo + 1
  CHECK(first.take() == "");
  late.take();
  say(late, "/nick late");
  CHECK(late.take() == "* Client 1001 is now late\n");
  CHECK(first.take() == "");
  say(late, "still relayed");
  CHECK(first.take() == "[late]: still relayed\n");
}

TEST_CASE_FIXTURE(RoomFixture, "a client dropped for being too slow is announced in any room") {
  for (std::size_t i = 0; i <= mux::ChatRoom::kAnnounceUpTo + 1; ++i)
    join();
  FakeMember& first = *members.front();
  FakeMember& slow = *members.back();
  first.take();
  room.leave(slow, "too slow", true);
  CHECK(first.take() == "* " + slow.name() + " left (too slow)\n");
  FakeMember& quiet = *members[1];
  room.leave(quiet, "closed by client", false);
  CHECK(first.take() == "");
}

namespace {

// A room with small limits and a clock the test moves by hand.
struct LimitedRoomFixture {
  mux::ChatRoom::Clock::time_point now{};
  mux::Logger logger{mux::Verbosity::quiet};
  mux::ChatRoom room{logger, 4096, limits(), [this] { return now; }};
  std::vector<std::unique_ptr<FakeMember>> members;

  static mux::ClientLimits limits() {
    mux::ClientLimits limits;
    limits.line_rate = 10;
    limits.line_burst = 10;
    limits.byte_rate = 1024;
    limits.byte_burst = 1024;
    limits.command_rate = 2;
    limits.command_burst = 3;
    limits.flood_timeout = std::chrono::seconds(2);
    return limits;
  }
  FakeMember& join() {
    members.push_back(std::make_unique<FakeMember>());
    room.join(*members.back(), "test");
    members.back()->take();
    return *members.back();
  }
  void say(FakeMember& sender, std::string_view line) {
    room.receive_line(sender, line, false);
    room.end_of_input();
  }
};

}  // namespace

TEST_CASE_FIXTURE(RoomFixture, "look-alike nicks are refused, naming the member they imitate") {
  FakeMember& a = join();
  FakeMember& b = join();
  say(a, "/nick alice");
  a.take(), b.take();
  say(b, "/nick \xD0\xB0lice");  // Cyrillic а: mixed scripts
  CHECK(b.take() ==
        "* invalid nick '\xD0\xB0lice': it mixes scripts (such as Latin and Cyrillic)\n");
  say(b, "/nick AL1CE");
  CHECK(b.take() == "* nick AL1CE looks too much like alice, who is here\n");
  say(b, "/nick Client3");
  CHECK(b.take() == "* invalid nick 'Client3': it looks like a default name (Client N)\n");
  say(b, "/nick Cli\xD0\xB5nt_1");
  CHECK(b.take().rfind("* invalid nick", 0) == 0);
  say(a, "/nick ALICE");  // its owner may still change the case
  CHECK(b.take() == "* alice is now ALICE\n");
}

TEST_CASE_FIXTURE(RoomFixture, "an HTTP request as the first line is refused and not relayed") {
  FakeMember& a = join();
  FakeMember& web = join();
  a.take(), web.take();
  say(web, "POST / HTTP/1.1");
  say(web, "Host: 127.0.0.1");
  say(web, "echo pwned");
  CHECK(web.closing);
  CHECK(web.take() == "");
  CHECK(a.take() == "* Client 2 left\n");
  CHECK_FALSE(web.in_room());
}

TEST_CASE_FIXTURE(RoomFixture, "a Host header as the first line is refused too") {
  FakeMember& web = join();
  web.take();
  say(web, "host: example.com");
  CHECK(web.closing);
}

TEST_CASE_FIXTURE(RoomFixture, "an upload header as the first line is refused with a notice") {
  FakeMember& a = join();
  FakeMember& up = join();
  a.take(), up.take();
  say(up, "MUXUP/1 16 secrets.txt");
  say(up, "password=hunter2");
  CHECK(up.closing);
  CHECK(up.take() == "* this is a chat server, not an upload server: upload refused\n");
  CHECK(a.take() == "* Client 2 left\n");
}

TEST_CASE_FIXTURE(RoomFixture, "HTTP-looking text after the first line is ordinary chat") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take(), b.take();
  say(b, "hi");
  say(b, "GET / HTTP/1.1");
  CHECK(a.take() == "[Client 2]: hi\n[Client 2]: GET / HTTP/1.1\n");
}

TEST_CASE_FIXTURE(LimitedRoomFixture, "a client over its line rate is told once and paused") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take();
  for (int i = 0; i < 10; ++i)
    say(b, "x");
  CHECK(b.pauses == 0);
  say(b, "x");  // the 11th line in the same instant
  CHECK(b.pauses == 1);
  CHECK(b.paused >= std::chrono::milliseconds(100));
  CHECK(b.paused <= std::chrono::milliseconds(101));
  CHECK(b.take() ==
        "* slow down: you send more than 10 lines or 1.0 KiB per second; reading you more "
        "slowly\n");
  CHECK(a.take().size() == 11 * std::string("[Client 2]: x\n").size());  // all still relayed
  now += std::chrono::milliseconds(100);
  say(b, "x");
  CHECK(b.take() == "");  // told once per flood
  CHECK(b.pauses == 2);
}

TEST_CASE_FIXTURE(LimitedRoomFixture, "a client that keeps flooding is disconnected") {
  FakeMember& a = join();
  FakeMember& b = join();
  for (int i = 0; i < 11; ++i)
    say(b, "x");
  b.take(), a.take();
  // Three lines every 100 ms against a rate of one: over the limit all along.
  for (int step = 0; step < 30 && !b.closing; ++step) {
    now += std::chrono::milliseconds(100);
    for (int i = 0; i < 3; ++i)
      say(b, "y");
  }
  CHECK(b.closing);
  CHECK(now >= mux::ChatRoom::Clock::time_point{} + std::chrono::seconds(2));
  CHECK(b.take() == "* excess flood: too fast for 2 s, disconnected\n");
  CHECK(a.take().find("* Client 2 left\n") != std::string::npos);
}

TEST_CASE_FIXTURE(LimitedRoomFixture, "a client that slowed down is forgiven") {
  FakeMember& b = join();
  for (int i = 0; i < 11; ++i)
    say(b, "x");
  now += std::chrono::seconds(1);  // refilled to over half the burst
  say(b, "x");
  now += std::chrono::seconds(5);
  for (int i = 0; i < 11; ++i)  // over again, but a new flood: told again, not disconnected
    say(b, "x");
  CHECK_FALSE(b.closing);
  std::string told = b.take();
  CHECK(told.find("* slow down") != told.rfind("* slow down"));
}

TEST_CASE_FIXTURE(LimitedRoomFixture, "a /who storm is answered up to the burst, then ignored") {
  FakeMember& a = join();
  FakeMember& b = join();
  a.take();
  for (int i = 0; i < 10; ++i)
    say(b, "/who");
  std::string who = "* online (2): Client 1, Client 2\n";
  std::string ignored = "* slow down: at most 2 commands per second; commands ignored\n";
  CHECK(b.take() == who + who + who + ignored);
  now += std::chrono::milliseconds(500);  // one more token
  for (int i = 0; i < 3; ++i)
    say(b, "/who");
  CHECK(b.take() == who);  // the notice waits a second
  now += std::chrono::seconds(1);
  for (int i = 0; i < 5; ++i)
    say(b, "/who");
  CHECK(b.take() == who + who + ignored);
  CHECK(a.take() == "");
}

TEST_CASE_FIXTURE(RoomFixture, "/who follows joins, renames and leaves") {
  FakeMember& a = join();
  say(a, "/who");
  CHECK(a.take().find("* online (1): Client 1\n") != std::string::npos);
  FakeMember& b = join();
  say(b, "/nick bob");
  say(a, "/who");
  CHECK(a.take().find("* online (2): Client 1, bob\n") != std::string::npos);
  room.leave(b, "gone", false);
  say(a, "/who");
  CHECK(a.take().find("* online (1): Client 1\n") != std::string::npos);
}

namespace {

// A RoomBus whose answers the test gives by hand, to see what the room does while it waits.
struct ManualBus final : mux::RoomBus {
  std::vector<AdmitCallback> admissions;
  std::vector<ClaimCallback> claims;
  std::uint64_t next_number = 1;

  [[nodiscard]] bool connected() const override { return true; }
  void publish(const mux::chat::RoomEvent&) override {}
  void publish_message(std::string_view, std::string_view) override {}
  void admit(std::size_t, AdmitCallback done) override { admissions.push_back(std::move(done)); }
  void claim_nick(const std::string&, ClaimCallback done) override {
    claims.push_back(std::move(done));
  }
  void release_nick(const std::string&) override {}
  struct Replay {
    std::uint64_t after = 0;
    std::uint64_t up_to = 0;
    ReplayCallback done;
  };
  std::vector<Replay> replays;
  void replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) override {
    replays.push_back({after, up_to, std::move(done)});
  }
  [[nodiscard]] std::vector<std::string> remote_names() const override { return {}; }
  [[nodiscard]] std::uint64_t highest_remote_number() const override { return 0; }
  [[nodiscard]] std::size_t remote_count() const override { return 0; }

  void answer_admission() {
    auto done = std::move(admissions.front());
    admissions.erase(admissions.begin());
    done(Admission{next_number++, {}});
  }
  void answer_claim(bool claimed) {
    auto done = std::move(claims.front());
    claims.erase(claims.begin());
    done(claimed);
  }
};

struct BusFixture : RoomFixture {
  ManualBus bus;
  BusFixture() { room.set_bus(&bus); }
};

}  // namespace

namespace {
mux::chat::RoomEvent numbered(std::string name, std::string text, std::uint64_t id) {
  mux::chat::RoomEvent event{
      mux::chat::RoomEventKind::message, std::move(name), std::move(text), {}, false};
  event.id = id;
  return event;
}
mux::HistoryEntry kept(std::string name, std::string text, std::uint64_t id) {
  return {0, std::move(name), std::move(text), id};
}
}  // namespace

TEST_CASE_FIXTURE(BusFixture, "a Redis room's ids come from Redis, the same on every server") {
  room.set_history(3);
  FakeMember& plain = join();
  bus.answer_admission();
  FakeMember& capable = join();
  bus.answer_admission();
  plain.take(), capable.take();
  room.room_epoch("00000000000000aa", 40, 0);
  CHECK(capable.take() == "");  // it asked for nothing yet
  say(capable, "/cap ids");
  CHECK(no_secret(capable.take()) ==
        "* cap ids epoch=00000000000000aa last=40 max-line=4096\n* online (2): Client 1, "
        "Client 2\n");
  // A local line: at once to the plain member, with its id once Redis numbered it.
  say(plain, "local");
  CHECK(capable.take() == "");
  room.own_messages_numbered({numbered("Client 1", "local", 41)});
  CHECK(capable.take() == "@41 [Client 1]: local\n");
  // Another server's lines carry their ids.
  room.apply_remote({numbered("carol", "remote", 42)});
  CHECK(capable.take() == "@42 [carol]: remote\n");
  CHECK(plain.take() == "[carol]: remote\n");
  // Memory holds 41 and 42 (and a line of another epoch would be 0): /since 39 needs 40 from
  // Redis's stream, one round trip; meanwhile the asker gets plain lines.
  FakeMember& back = join();
  bus.answer_admission();
  back.take();
  say(back, "/since 00000000000000aa 38");
  REQUIRE(bus.replays.size() == 1);
  CHECK(bus.replays[0].after == 38);
  CHECK(bus.replays[0].up_to == 40);
  room.apply_remote({numbered("carol", "meanwhile", 43)});
  CHECK(back.take() == "[carol]: meanwhile\n");
  bus.replays[0].done(std::vector<mux::HistoryEntry>{kept("dave", "forty", 40)});
  CHECK(no_secret(back.take()) ==
        "* cap ids epoch=00000000000000aa last=43 max-line=4096\n* online (3): Client 1, "
        "Client 2, Client 3\n* 1 line may have been missed\n@40 [dave]: forty\n@41 [Client 1]: "
        "local\n@42 [carol]: remote\n@43 [carol]: meanwhile\n");
  // Redis restarted empty: a new epoch, said to the members with ids.
  room.room_epoch("00000000000000bb", 0, 0);
  std::string reset =
      "* cap ids epoch=00000000000000bb last=0 max-line=4096\n"
      "* lines may have been missed: the room's history was lost (Redis restarted empty)\n";
  CHECK(no_secret(capable.take()) == "* Client 3 joined\n@43 [carol]: meanwhile\n" + reset);
  CHECK(plain.take() == "* Client 3 joined\n[carol]: meanwhile\n");
  CHECK(no_secret(back.take()) == reset);
  // Ids of the old epoch are never replayed by id.
  say(back, "/since 00000000000000bb 0");
  CHECK(bus.replays.size() == 1);
  CHECK(no_secret(back.take()) ==
        "* cap ids epoch=00000000000000bb last=0 max-line=4096\n* online (3): Client 1, "
        "Client 2, Client 3\n");
}

TEST_CASE_FIXTURE(BusFixture, "lines sent before the welcome are held, then relayed in order") {
  FakeMember& watcher = join();
  bus.answer_admission();
  watcher.take();
  FakeMember& script = join();
  say(script, "one");
  say(script, "two");
  CHECK(script.pauses == 2);  // read no further while they are held
  CHECK(watcher.take() == "");
  // Its end of input comes before the answer: the room keeps it until its lines are handled.
  CHECK_FALSE(room.leave(script, "closed by client", false));
  CHECK_FALSE(script.closing);
  bus.answer_admission();
  CHECK(watcher.take() == "* Client 2 joined\n[Client 2]: one\n[Client 2]: two\n* Client 2 left\n");
  CHECK(script.closing);
  CHECK(room.size() == 1);
}

TEST_CASE_FIXTURE(BusFixture, "lines after a /nick wait for its claim and go out under the nick") {
  FakeMember& watcher = join();
  bus.answer_admission();
  FakeMember& erin = join();
  bus.answer_admission();
  watcher.take(), erin.take();
  say(erin, "/nick erin");
  say(erin, "deploy done");
  say(erin, "/nick erin2");  // held too: a second claim only once the first is answered
  say(erin, "after");
  CHECK(watcher.take() == "");
  CHECK(bus.claims.size() == 1);
  bus.answer_claim(true);
  CHECK(watcher.take() == "* Client 2 is now erin\n[erin]: deploy done\n");
  REQUIRE(bus.claims.size() == 1);
  bus.answer_claim(false);  // taken elsewhere: the rest goes out under the old name
  CHECK(erin.take() == "* Client 2 is now erin\n* nick erin2 is taken\n");
  CHECK(watcher.take() == "[erin]: after\n");
}

TEST_CASE_FIXTURE(BusFixture, "a member gone for good while its lines are held leaves at once") {
  FakeMember& watcher = join();
  bus.answer_admission();
  watcher.take();
  FakeMember& dropped = join();
  bus.answer_admission();
  watcher.take();
  say(dropped, "/nick dee");
  say(dropped, "lost with its connection");
  CHECK_FALSE(room.leave(dropped, "reset", false));
  room.gone(dropped);
  CHECK(watcher.take() == "* Client 2 left\n");
  bus.answer_claim(true);  // the late answer finds nobody
  CHECK(watcher.take() == "");
  CHECK(room.size() == 1);
}

TEST_CASE_FIXTURE(RoomFixture, "ids go only to members that asked, and /since replays by id") {
  room.set_history(3);
  FakeMember& plain = join();
  FakeMember& capable = join();
  FakeMember& sender = join();
  plain.take(), capable.take(), sender.take();
  say(sender, "before");
  say(capable, "/cap ids");
  CHECK(no_secret(capable.take()) ==
        "[Client 3]: before\n* cap ids epoch=" + room.epoch() +
            " last=1 max-line=4096\n* online (3): Client 1, Client 2, Client 3\n");
  say(sender, "one");
  say(sender, "two");
  CHECK(plain.take() == "[Client 3]: before\n[Client 3]: one\n[Client 3]: two\n");
  CHECK(capable.take() == "@2 [Client 3]: one\n@3 [Client 3]: two\n");
  // Back after id 2: line 3 again, exactly once; its own lines are not sent back.
  say(capable, "mine");
  plain.take();
  std::string answer = "* cap ids epoch=" + room.epoch() +
                       " last=4 max-line=4096\n* online (3): Client 1, Client 2, Client 3\n";
  say(capable, "/since " + room.epoch() + " 2");
  CHECK(no_secret(capable.take()) == answer + "@3 [Client 3]: two\n");
  // Older than the history (3 lines: ids 2, 3, 4): how many may be missing, then the rest.
  say(sender, "five");
  capable.take();
  answer.replace(answer.find("last=4"), 6, "last=5");
  say(capable, "/since " + room.epoch() + " 0");
  CHECK(no_secret(capable.take()) ==
        answer + "* 2 lines may have been missed\n@3 [Client 3]: two\n@5 [Client 3]: five\n");
  // Another epoch: the history it knew is gone; everything kept here is new to it.
  say(capable, "/since 0123456789abcdef 9");
  CHECK(no_secret(capable.take()) ==
        answer +
            "* lines may have been missed: the room's history was lost (a "
            "server restart)\n@3 [Client 3]: two\n@5 [Client 3]: five\n");
  // A plain client's /since turns ids on too (what a reconnecting client sends).
  plain.take();
  say(plain, "/since " + room.epoch() + " 4");
  CHECK(no_secret(plain.take()) == "* cap ids epoch=" + room.epoch() +
                                       " last=5 max-line=4096\n* online (3): Client 1, Client 2, "
                                       "Client 3\n@5 [Client 3]: five\n");
  say(plain, "/since nonsense");
  CHECK(plain.take() == "* usage: /since EPOCH ID\n");
}

TEST_CASE_FIXTURE(RoomFixture, "/reclaim takes a nick from its ghost only with its secret") {
  FakeMember& ghost = join();
  say(ghost, "/nick alice");
  say(ghost, "/cap ids");
  std::string secret = secret_in(ghost.take());
  // The same session asking again keeps its secret.
  say(ghost, "/cap ids");
  CHECK(secret_in(ghost.take()) == secret);
  FakeMember& back = join();
  back.take();
  say(back, "/reclaim alice");
  CHECK(back.take() == "* usage: /reclaim NICK SECRET\n");
  say(back, "/reclaim alice 0123456789abcdef0123456789abcdef");
  CHECK(back.take() == "* nick alice is taken\n");
  say(back, "/reclaim Alice " + secret);  // the exact nick only
  CHECK(back.take() == "* nick Alice is taken\n");
  CHECK_FALSE(ghost.closing);
  ghost.take();
  say(back, "/reclaim alice " + secret);
  CHECK(ghost.take() == "* replaced by a new connection with this session's secret\n");
  CHECK(ghost.closing);
  CHECK(back.take() == "* alice left\n* Client 2 is now alice\n");
  CHECK(room.size() == 1);
  // The old session's secret is worth nothing now; a free nick is simply taken.
  FakeMember& thief = join();
  thief.take();
  say(thief, "/reclaim alice " + secret);
  CHECK(thief.take() == "* nick alice is taken\n");
  say(thief, "/reclaim bob " + secret);
  CHECK(thief.take() == "* Client 3 is now bob\n");
}

TEST_CASE_FIXTURE(RoomFixture, "/history N shows the last N lines, dated, to anyone") {
  FakeMember& a = join();
  FakeMember& b = join();
  say(b, "/history 5");
  CHECK(b.take().ends_with("* no history is kept here (the server runs without --history)\n"));
  room.set_history(10);
  say(a, "one");
  say(a, "two");
  say(a, "three");
  b.take();
  say(b, "/history 2");
  std::string got = b.take();
  CHECK(got.find("one") == std::string::npos);
  CHECK(got.find("] [Client 1]: two\n[") != std::string::npos);
  CHECK(got.ends_with("] [Client 1]: three\n"));
  say(b, "/history x");
  CHECK(b.take() == "* usage: /history N\n");
}
