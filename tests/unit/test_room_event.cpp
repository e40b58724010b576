#include <doctest/doctest.h>

#include <string>

#include "chat/room_event.hpp"

using namespace mux::chat;

TEST_CASE("room events: a batch round-trips, whatever bytes the fields hold") {
  std::string wire;
  encode_room_event(wire, "srv-1", {RoomEventKind::message, "alice", "a 3:b\n c", {}, false});
  encode_room_event(wire, "srv-1", {RoomEventKind::joined, "Client 12", {}, {}, false});
  encode_room_event(wire, "srv-1", {RoomEventKind::left, "bob", "quit", {}, true});
  encode_room_event(wire, "srv-1", {RoomEventKind::renamed, "Client 12", "carol", "", false});
  CHECK(wire.rfind("MUXROOM1 srv-1\nm 5:alice 8:a 3:b\n c 0:\n", 0) == 0);
  auto batch = decode_room_events(wire, 4096);
  REQUIRE(batch);
  CHECK(batch->server_id == "srv-1");
  REQUIRE(batch->events.size() == 4);
  CHECK(batch->events[0].text == "a 3:b^J c");  // sanitized on arrival
  CHECK(batch->events[1].kind == RoomEventKind::joined);
  CHECK(batch->events[1].name == "Client 12");
  CHECK(batch->events[2].too_slow);
  CHECK(batch->events[3].text == "carol");
}

TEST_CASE("room events: texts are cut at max_text, malformed payloads refused whole") {
  std::string wire;
  encode_room_event(wire, "s", {RoomEventKind::message, "eve", "0123456789", {}, false});
  auto batch = decode_room_events(wire, 4);
  REQUIRE(batch);
  CHECK(batch->events[0].text == "0123");
  for (std::string bad : {"",
                          "MUXROOM1 s",
                          "MUXROOM2 s\n",
                          "MUXROOM1 bad id\n",
                          "MUXROOM1 s\nm 3:eve 9:short 0:\n",
                          "MUXROOM1 s\nm 3:eve 2:hi\n",
                          "MUXROOM1 s\nm 3:eve 2:hi 0:",
                          "MUXROOM1 s\nx 3:eve 0: 0:\n",
                          "MUXROOM1 s\nl 3:eve 0: 1:2\n",
                          "MUXROOM1 s\nj 8:Client 0 0: 0:\n",
                          "MUXROOM1 s\nj 4:a\x1b[m 0: 0:\n",
                          "MUXROOM1 s\nr 3:eve 3:a b 0:\n",
                          "MUXROOM1 s\nm 3:eve 99999999:x 0:\n",
                          "MUXROOM1 s\nm -1:e 0: 0:\n",
                          "MUXROOM1 s\nm 03:eve 2:hi 0:\n",
                          "MUXROOM1 s\nm 3:eve 2:hi 00:\n",
                          "MUXROOM1 s\nm 3:eve 2:hi 1:x\n",
                          "MUXROOM1 s\nj 3:eve 1:x 0:\n",
                          "MUXROOM1 s\nj 3:eve 0: 1:x\n",
                          "MUXROOM1 s\nm 3:eve 65537:x 0:\n",
                          "MUXROOM1 s\nm 3:eve 2:hi 0:\nj 3:bob 0: 0:"}) {
    CAPTURE(bad);
    CHECK_FALSE(decode_room_events(bad, 4096));
  }
}

TEST_CASE("room events: the members' version line, at most one per batch") {
  std::string wire;
  encode_room_event(wire, "srv-1", {RoomEventKind::joined, "Client 3", {}, {}, false});
  encode_members_version(wire, "srv-1", 41);
  CHECK(wire == "MUXROOM1 srv-1\nj 8:Client 3 0: 0:\nv 0: 2:41 0:\n");
  auto batch = decode_room_events(wire, 4096);
  REQUIRE(batch);
  CHECK(batch->events.size() == 1);
  CHECK(batch->members_version == 41u);
  CHECK_FALSE(decode_room_events("MUXROOM1 s\nj 3:eve 0: 0:\n", 4096)->members_version);
  for (std::string bad :
       {"MUXROOM1 s\nv 0: 2:41 0:\nv 0: 2:42 0:\n", "MUXROOM1 s\nv 0: 2:04 0:\n",
        "MUXROOM1 s\nv 0: 0: 0:\n", "MUXROOM1 s\nv 3:eve 1:4 0:\n", "MUXROOM1 s\nv 0: 1:4 1:x\n",
        "MUXROOM1 s\nv 0: 2:4x 0:\n", "MUXROOM1 s\nv 0: 20:99999999999999999999 0:\n"})
    CHECK_FALSE(decode_room_events(bad, 4096));
}

TEST_CASE("room events: the number of a default name") {
  CHECK(default_name_number("Client 17") == 17u);
  CHECK_FALSE(default_name_number("Client 017"));
  CHECK_FALSE(default_name_number("alice"));
  CHECK_FALSE(default_name_number("Client 99999999999999999999"));
}

TEST_CASE("room events: an i line numbers every m event from its first id, dropped ones too") {
  std::string wire;
  encode_room_event(wire, "s", {RoomEventKind::message, "eve", "one", {}, false});
  encode_room_event(wire, "s", {RoomEventKind::joined, "Client 3", {}, {}, false});
  encode_room_event(wire, "s", {RoomEventKind::message, "eve", "", {}, false});  // dropped
  encode_room_event(wire, "s", {RoomEventKind::message, "eve", "three", {}, false});
  auto plain = decode_room_events(wire, 4096);
  REQUIRE(plain);
  CHECK(plain->events[0].id == 0);  // not numbered: no i line
  CHECK(plain->epoch.empty());
  encode_ids(wire, 17, "00ff");
  CHECK(wire.ends_with("i 0: 2:17 4:00ff\n"));
  auto batch = decode_room_events(wire, 4096);
  REQUIRE(batch);
  CHECK(batch->epoch == "00ff");
  REQUIRE(batch->events.size() == 3);
  CHECK(batch->events[0].id == 17);
  CHECK(batch->events[1].id == 0);
  CHECK(batch->events[2].id == 19);
  for (std::string bad :
       {"i 0: 2:17 4:00ff\ni 0: 2:18 4:00ff\n", "i 0: 2:07 4:00ff\n", "i 0: 1:0 4:00ff\n",
        "i 0: 2:17 4:00FF\n", "i 0: 2:17 0:\n", "i 1:x 2:17 4:00ff\n"}) {
    CHECK_FALSE(decode_room_events("MUXROOM1 s\n" + bad, 4096));
  }
}

TEST_CASE("room events: an s line records what its tag covers; only an i line may follow it") {
  std::string wire;
  encode_room_event(wire, "srv-1", {RoomEventKind::message, "alice", "hi", {}, false});
  std::size_t covered = wire.size();
  std::string tag(32, 'a');
  encode_signature(wire, 1234, tag);
  encode_ids(wire, 7, "00ff");
  auto batch = decode_room_events(wire, 4096);
  REQUIRE(batch);
  CHECK(batch->sequence == 1234u);
  CHECK(batch->tag == tag);
  CHECK(batch->signed_bytes == covered);
  CHECK(batch->first_id == 7u);
  // An event after the signature, a second signature, a tag that is not 32 hex digits: refused.
  std::string after = wire;
  encode_room_event(after, "srv-1", {RoomEventKind::joined, "bob", {}, {}, false});
  CHECK_FALSE(decode_room_events(after, 4096));
  std::string twice = wire.substr(0, covered);
  encode_signature(twice, 1, tag);
  encode_signature(twice, 2, tag);
  CHECK_FALSE(decode_room_events(twice, 4096));
  std::string short_tag = wire.substr(0, covered);
  encode_signature(short_tag, 1, "abc");
  CHECK_FALSE(decode_room_events(short_tag, 4096));
  // Unsigned batches decode as before.
  auto unsigned_batch = decode_room_events(wire.substr(0, covered), 4096);
  REQUIRE(unsigned_batch);
  CHECK_FALSE(unsigned_batch->sequence);
}

TEST_CASE("room events: a k line names a reclaimed nick, its holder and a verifier, nothing else") {
  std::string verifier(64, 'a');
  std::string wire;
  encode_reclaim(wire, "srv-2", {"alice", "srv-1", verifier});
  CHECK(wire == "MUXROOM1 srv-2\nk 5:alice 5:srv-1 64:" + verifier + "\n");
  encode_room_event(wire, "srv-2", {RoomEventKind::renamed, "Client 3", "alice", "", false});
  auto batch = decode_room_events(wire, 4096);
  REQUIRE(batch);
  REQUIRE(batch->reclaims.size() == 1);
  CHECK(batch->reclaims[0].nick == "alice");
  CHECK(batch->reclaims[0].owner == "srv-1");
  CHECK(batch->reclaims[0].verifier == verifier);
  REQUIRE(batch->events.size() == 1);  // the rename, not an event of its own
  for (std::string bad : {"k 8:Client 3 5:srv-1 64:" + verifier,         // never a default name
                          "k 5:alice 6:srv 1 64:" + verifier,            // not a server id
                          "k 5:alice 5:srv-1 63:" + verifier.substr(1),  // not a SHA-256
                          "k 5:alice 5:srv-1 64:" + std::string(64, 'A'),
                          "k 3:a\x01"
                          "b 5:srv-1 64:" +
                              verifier}) {
    CHECK_FALSE(decode_room_events("MUXROOM1 s\n" + bad + "\n", 4096));
  }
}
