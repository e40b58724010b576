// RoomHistory: the room's memory of its messages, its ids and epochs, and the /since answer,
// checked to the byte.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "chat/room_history.hpp"

using mux::HistoryEntry;
using mux::RoomHistory;

namespace {
// Relays and keeps a message as the room does with a line of its own.
void relay(RoomHistory& history, const std::string& name, const std::string& text,
           std::uint64_t room_id = 0) {
  history.remember(name, text, history.number(room_id));
}

std::vector<std::string> texts(const std::vector<HistoryEntry>& entries) {
  std::vector<std::string> out;
  for (const HistoryEntry& entry : entries)
    out.push_back(entry.text);
  return out;
}
}  // namespace

TEST_CASE("a room counts its own ids until the bus says the room's epoch, then takes Redis's") {
  RoomHistory history("local");
  CHECK(history.epoch() == "local");
  CHECK_FALSE(history.room_ids());
  CHECK(history.number(0) == 1);
  CHECK(history.number(0) == 2);
  CHECK(history.number(77) == 3);  // a room id means nothing before the room's epoch
  CHECK(history.start_epoch("redis", 10) == RoomHistory::EpochChange::first);
  CHECK(history.room_ids());
  CHECK(history.epoch() == "redis");
  CHECK(history.last_id() == 10);
  CHECK(history.number(0) == 0);  // a local line waits for its id
  CHECK(history.number(11) == 11);
  CHECK(history.number(11) == 0);  // not newer: no id
  CHECK(history.number(5) == 0);
  CHECK(history.last_id() == 11);
  CHECK_FALSE(history.numbered_later(11));
  CHECK(history.numbered_later(12));
  CHECK(history.last_id() == 12);
  // The same epoch again (a reconnection) changes nothing; another one means Redis lost it.
  CHECK(history.start_epoch("redis", 99) == RoomHistory::EpochChange::same);
  CHECK(history.last_id() == 12);
  CHECK(history.start_epoch("again", 3) == RoomHistory::EpochChange::lost);
  CHECK(history.last_id() == 3);
}

TEST_CASE("the first epoch the bus says can be this room's own") {
  RoomHistory history("same");
  CHECK(history.start_epoch("same", 0) == RoomHistory::EpochChange::same);
  CHECK(history.room_ids());
}

TEST_CASE("only the last --history messages are kept, none when it is off") {
  RoomHistory off("e");
  relay(off, "a", "one");
  CHECK(off.all().empty());
  CHECK(off.last_id() == 1);  // numbered all the same
  CHECK(off.first_kept_id() == 2);

  RoomHistory history("e");
  history.set_limit(3);
  for (const char* text : {"one", "two", "three", "four", "five"})
    relay(history, "a", text);
  CHECK(texts(history.all()) == std::vector<std::string>{"three", "four", "five"});
  CHECK(texts(history.last(2)) == std::vector<std::string>{"four", "five"});
  CHECK(texts(history.last(10)) == std::vector<std::string>{"three", "four", "five"});
  CHECK(history.last(0).empty());
  CHECK(history.first_kept_id() == 3);
  // Another epoch's ids are never replayed: what is kept loses them.
  CHECK(history.start_epoch("other", 40) == RoomHistory::EpochChange::first);
  CHECK(history.all().size() == 3);
  CHECK(history.all().front().id == 0);
  CHECK(history.first_kept_id() == 41);
}

TEST_CASE("/since from memory: what is newer, never the asker's own, and how much is missing") {
  RoomHistory history("e");
  history.set_limit(3);
  relay(history, "a", "one");
  relay(history, "b", "two");
  relay(history, "a", "three");
  relay(history, "b", "four");
  relay(history, "c", "five");
  CHECK(history.replay("a", 3, 0, std::nullopt, false) == "@4 [b]: four\n@5 [c]: five\n");
  CHECK(history.replay("x", 0, 0, std::nullopt, false) ==
        "* 2 lines may have been missed\n@3 [a]: three\n@4 [b]: four\n@5 [c]: five\n");
  CHECK(history.replay("x", 1, 0, std::nullopt, false) ==
        "* 1 line may have been missed\n@3 [a]: three\n@4 [b]: four\n@5 [c]: five\n");
  CHECK(history.replay("x", 5, 0, std::nullopt, false).empty());
  // A client of another epoch (this server restarted): everything kept is new to it.
  CHECK(history.replay("x", 0, 0, std::nullopt, true) ==
        "* lines may have been missed: the room's history was lost (a server restart)\n"
        "@3 [a]: three\n@4 [b]: four\n@5 [c]: five\n");
}

TEST_CASE("/since older than memory: the stream's part first, its gaps counted once") {
  RoomHistory history("e");
  history.set_limit(10);
  CHECK(history.start_epoch("room", 10) == RoomHistory::EpochChange::first);
  relay(history, "a", "eleven", 11);
  relay(history, "b", "twelve", 12);
  CHECK(history.first_kept_id() == 11);
  std::vector<HistoryEntry> stream{{0, "y", "six", 6}, {0, "x", "eight", 8}, {0, "z", "nine", 9}};
  // 7 was dropped by the room (a gap after the first is never missed), 8 is the asker's own,
  // 10 is not in the stream (trimmed, or never stored): one line missing.
  CHECK(history.replay("x", 5, 10, stream, false) ==
        "* 1 line may have been missed\n@6 [y]: six\n@9 [z]: nine\n"
        "@11 [a]: eleven\n@12 [b]: twelve\n");
  // The stream starts after what the client saw: the lines before its first are missing.
  std::vector<HistoryEntry> trimmed{{0, "y", "eight", 8}};
  CHECK(history.replay("x", 5, 10, trimmed, false) ==
        "* 4 lines may have been missed\n@8 [y]: eight\n@11 [a]: eleven\n@12 [b]: twelve\n");
  // The stream could not be read: all of (5, 10] may be missing.
  CHECK(history.replay("x", 5, 10, std::nullopt, false) ==
        "* 5 lines may have been missed\n@11 [a]: eleven\n@12 [b]: twelve\n");
}

TEST_CASE("/history lines carry when they were said, in UTC") {
  std::vector<HistoryEntry> entries{{0, "a", "first", 1}, {1'700'000'000, "b", "later", 0}};
  CHECK(RoomHistory::format(entries) ==
        "[1970-01-01 00:00:00] [a]: first\n[2023-11-14 22:13:20] [b]: later\n");
  CHECK(RoomHistory::format({}).empty());
}

TEST_CASE("every room starts with an epoch of its own") {
  RoomHistory one;
  RoomHistory two;
  CHECK(one.epoch().size() == 16);
  CHECK(one.epoch() != two.epoch());
}
