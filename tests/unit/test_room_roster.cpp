#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "chat/chat_protocol.hpp"
#include "chat/room_roster.hpp"

using mux::chat::RoomRoster;
namespace notice = mux::chat::notice;

namespace {

// Feeds a notice as the client reads it: without its newline.
void feed(RoomRoster& roster, const std::string& line) {
  roster.observe(std::string_view(line).substr(0, line.size() - (line.ends_with('\n') ? 1 : 0)));
}

std::vector<std::string> names(const RoomRoster& roster) {
  return roster.nicks();
}

}  // namespace

TEST_CASE("the roster follows the server's notices") {
  RoomRoster roster;
  feed(roster, notice::welcome("Client 2"));
  CHECK(roster.own_nick() == "Client 2");
  feed(roster, notice::who({"Client 1", "Client 2", "bob"}));
  CHECK(names(roster) == std::vector<std::string>{"Client 1", "Client 2", "bob"});
  feed(roster, notice::joined("carol"));
  feed(roster, notice::left("bob", false));
  feed(roster, notice::renamed("Client 1", "alice"));
  feed(roster, notice::renamed("Client 2", "me"));
  CHECK(roster.own_nick() == "me");
  CHECK(names(roster) == std::vector<std::string>{"alice", "carol", "me"});
  feed(roster, notice::left("carol", true));
  feed(roster, notice::relay("dave", "hi, alice left early"));
  CHECK(names(roster) == std::vector<std::string>{"alice", "dave", "me"});
  // Other notices change nothing.
  feed(roster, notice::server_full());
  feed(roster, notice::nick_taken("zed"));
  feed(roster, notice::help());
  CHECK(names(roster) == std::vector<std::string>{"alice", "dave", "me"});
}

TEST_CASE("Tab completes the nick being typed") {
  RoomRoster roster;
  feed(roster, notice::welcome("Client 2"));
  feed(roster, notice::who({"Client 1", "Client 2", "Client 3", "alice", "albert", "bob"}));
  SUBCASE("one match at the start of the line gets a colon") {
    auto completion = roster.complete("bo");
    CHECK(completion.replace_bytes == 2);
    CHECK(completion.insert == "bob: ");
  }
  SUBCASE("in the middle of a line, a space; case is the nick's") {
    auto completion = roster.complete("hi BO");
    CHECK(completion.replace_bytes == 2);
    CHECK(completion.insert == "bob ");
  }
  SUBCASE("several matches extend to what they share, then are listed") {
    auto completion = roster.complete("a");
    CHECK(completion.insert == "al");
    CHECK(completion.replace_bytes == 1);
    completion = roster.complete("al");
    CHECK(completion.insert.empty());
    CHECK(completion.choices == std::vector<std::string>{"albert", "alice"});
  }
  SUBCASE("a nick with a space, never our own") {
    auto completion = roster.complete("Cli");
    CHECK(completion.insert == "Client ");
    completion = roster.complete("thanks Client 3");
    CHECK(completion.replace_bytes == 8);
    CHECK(completion.insert == "Client 3 ");
    CHECK(roster.complete("Client 2").insert.empty());
    CHECK(roster.complete("Client 2").choices.empty());
  }
  SUBCASE("nothing to complete") {
    CHECK(roster.complete("").insert.empty());
    CHECK(roster.complete("zz").choices.empty());
    CHECK(roster.complete("hello ").insert.empty());
  }
}

TEST_CASE("the roster remembers the most recently seen names, and no more") {
  RoomRoster roster;
  feed(roster, notice::welcome("me"));
  feed(roster, notice::relay("alice", "still here"));
  // 300,000 joins (the measured attack grew the roster to 35.6 MB): only the newest stay.
  for (int i = 0; i < 300'000; ++i) {
    feed(roster, notice::joined("user" + std::to_string(i)));
    if (i % 1000 == 0) feed(roster, notice::relay("alice", "talking keeps a name"));
  }
  std::vector<std::string> kept = names(roster);
  CHECK(kept.size() == RoomRoster::kMaxNames);
  CHECK(std::find(kept.begin(), kept.end(), "user299999") != kept.end());
  CHECK(std::find(kept.begin(), kept.end(), "user0") == kept.end());
  CHECK(std::find(kept.begin(), kept.end(), "alice") != kept.end());
  CHECK(roster.complete("ali").insert == "alice: ");
  // A name longer than any nick is not remembered.
  feed(roster, notice::relay(std::string(RoomRoster::kMaxNameBytes + 1, 'x'), "hi"));
  CHECK(names(roster).size() == RoomRoster::kMaxNames);
  CHECK(roster.complete("xxx").insert.empty());
  // Leaving frees a place without forgetting anyone else.
  feed(roster, notice::left("alice", false));
  CHECK(names(roster).size() == RoomRoster::kMaxNames - 1);
}
