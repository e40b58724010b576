// ChatRoom with fake members: who hears what, in which order.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/chat_room.hpp"
#include "core/logger.hpp"

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
