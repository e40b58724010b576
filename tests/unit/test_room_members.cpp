// RoomMembers and RelayChunk: who gets which block (plain, with ids, none), the O(1) removal,
// /who over the other servers' names, and the text a chunk gathers.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "chat/chat_room.hpp"
#include "chat/room_members.hpp"
#include "fmt/format.h"

namespace {

struct Member final : mux::ChatMember {
  std::string received;
  void deliver(const mux::Block& block) override { received += *block; }
  void close_after_output() override {}
  void pause_input(std::chrono::milliseconds /*pause*/) override {}
  std::string take() { return std::exchange(received, {}); }
};

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("a block reaches every member but the one excepted, and removal keeps the rest") {
  mux::RoomMembers members;
  Member a;
  Member b;
  Member c;
  members.add(a);
  members.add(b);
  members.add(c);
  CHECK(members.size() == 3);
  members.broadcast(mux::make_block("hi\n"), &b);
  CHECK(a.take() == "hi\n");
  CHECK(b.take().empty());
  CHECK(c.take() == "hi\n");
  // The last member takes the place of the one removed.
  members.remove(a);
  CHECK(members.list() == std::vector<mux::ChatMember*>{&c, &b});
  members.remove(b);
  CHECK(members.list() == std::vector<mux::ChatMember*>{&c});
  members.broadcast(mux::make_block("x\n"), nullptr);
  CHECK(a.take().empty());
  CHECK(c.take() == "x\n");
}

TEST_CASE("a chunk goes plain, or with ids to members that asked, never back to its sender") {
  mux::RoomMembers members;
  Member plain_reader;
  Member id_reader;
  Member sender;
  members.add(plain_reader);
  members.add(id_reader);
  members.add(sender);
  members.want_ids(id_reader);
  members.want_ids(id_reader);  // once is enough
  CHECK(members.with_ids() == 1);
  mux::Block plain = mux::make_block("[s]: one\n");
  mux::Block with_ids = mux::make_block("@7 [s]: one\n");
  members.deliver_chunk(plain, with_ids, &sender, false);
  CHECK(plain_reader.take() == "[s]: one\n");
  CHECK(id_reader.take() == "@7 [s]: one\n");
  CHECK(sender.take().empty());
  // No ids (out of Redis's reach): the plain lines, to everyone.
  members.deliver_chunk(plain, nullptr, &sender, false);
  CHECK(plain_reader.take() == "[s]: one\n");
  CHECK(id_reader.take() == "[s]: one\n");
  // Ids that come later (numbered by Redis): the member that asked waits for them.
  members.deliver_chunk(plain, nullptr, &sender, true);
  CHECK(plain_reader.take() == "[s]: one\n");
  CHECK(id_reader.take().empty());
  // ... and gets them then, unless it sent the line (default members here are all named "").
  members.deliver_numbered(mux::make_block("@8 [s]: one\n"), "s");
  CHECK(id_reader.take() == "@8 [s]: one\n");
  CHECK(plain_reader.take().empty());
  members.deliver_numbered(mux::make_block("@9 [s]: two\n"), "");
  CHECK(id_reader.take().empty());
  // A member that leaves takes its wish for ids along.
  members.remove(id_reader);
  CHECK(members.with_ids() == 0);
}

TEST_CASE("/who pages the other servers' names sorted, and is built once per change") {
  mux::RoomMembers members;
  int asked = 0;
  Names remote{"zoe", "bob", "anna"};
  auto remote_names = [&] {
    ++asked;
    return remote;
  };
  CHECK(*members.who_list(remote_names) == "* online (3): anna, bob, zoe\n");
  remote.push_back("carl");
  CHECK(*members.who_list(remote_names) == "* online (3): anna, bob, zoe\n");  // cached
  CHECK(asked == 1);
  members.names_changed();
  CHECK(*members.who_list(remote_names) == "* online (4): anna, bob, carl, zoe\n");
  CHECK(asked == 2);

  Names many;
  for (int i = 0; i < 150; ++i)
    many.push_back(fmt::format("n{:03}", 149 - i));
  members.names_changed();
  std::string page = *members.who_list([&] { return many; });
  CHECK(page.starts_with("* online (150, first 100 shown; /who TEXT finds names): n000, n001, "));
  CHECK(page.ends_with(", n098, n099\n"));
}

TEST_CASE("/who TEXT finds names by part, ignoring ASCII case") {
  mux::RoomMembers members;
  CHECK(members.who_matching("AN", {"zoe", "Anna", "dan", "bob"}) ==
        "* online with \"AN\" (2): Anna, dan\n");
  CHECK(members.who_matching("q", {"zoe"}) == "* nobody online has \"q\" in their name\n");
}

TEST_CASE("a relay chunk gathers plain lines, and ids only when asked and known") {
  mux::RelayChunk chunk;
  Member sender;
  CHECK(chunk.empty());
  chunk.set_sender(&sender);
  chunk.append("s", "one", 1, true);
  chunk.append("s", "two", 0, true);  // no id (yet): plain only
  chunk.append("s", "three", 3, false);
  CHECK_FALSE(chunk.empty());
  CHECK_FALSE(chunk.full());
  CHECK(chunk.sender() == &sender);
  chunk.set_numbered_later();
  mux::RelayChunk::Taken taken = chunk.take();
  CHECK(taken.sender == &sender);
  CHECK(taken.numbered_later);
  CHECK(taken.plain == "[s]: one\n[s]: two\n[s]: three\n");
  CHECK(taken.with_ids == "@1 [s]: one\n");
  // Empty again, its sender and flag gone.
  CHECK(chunk.empty());
  CHECK(chunk.sender() == nullptr);
  CHECK_FALSE(chunk.numbered_later());
  // A sender that left is forgotten; its lines stay.
  chunk.set_sender(&sender);
  chunk.append("s", "four", 0, false);
  chunk.forget(&sender);
  CHECK(chunk.sender() == nullptr);
  CHECK(chunk.take().plain == "[s]: four\n");
}

TEST_CASE("a relay chunk is full at 32 KiB") {
  mux::RelayChunk chunk;
  // "[s]: " + text + "\n": one byte short of full.
  std::string text(mux::RelayChunk::kMaxBytes - 7, 'x');
  chunk.append("s", text, 0, false);
  CHECK_FALSE(chunk.full());
  chunk.append("s", "", 0, false);
  CHECK(chunk.full());
}
