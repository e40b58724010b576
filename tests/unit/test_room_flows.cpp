// The pure parts of the room's flows (issue 20's split of ChatRoom): the publish runs that hand
// Redis's answers back to their senders (MessageAcks), the start of a new epoch another server
// reached first and /history's count (RoomCatchUp), and the writer key the room keeps.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "chat/message_acks.hpp"
#include "chat/room_catch_up.hpp"
#include "chat/room_event.hpp"

namespace {

using Share = std::tuple<std::uint64_t, std::uint64_t, std::size_t>;  // sender, first id, count

std::vector<Share> answer(mux::PublishRuns& runs, std::uint64_t first_id, std::size_t count) {
  std::vector<Share> shares;
  runs.answered(first_id, count, [&](std::uint64_t sender, std::uint64_t first, std::size_t n) {
    shares.emplace_back(sender, first, n);
  });
  return shares;
}

mux::chat::RoomEvent message(std::uint64_t id) {
  return {mux::chat::RoomEventKind::message, "Client 1", "hi", {}, false, id};
}

}  // namespace

TEST_CASE("publish runs: consecutive messages of one sender are one run, answered in order") {
  mux::PublishRuns runs;
  runs.add(1);
  runs.add(1);
  runs.add(2);
  runs.add(1);
  CHECK(runs.runs() == 3);
  // One answer spanning runs: each sender gets its share with its own first id.
  CHECK(answer(runs, 10, 3) == std::vector<Share>{{1, 10, 2}, {2, 12, 1}});
  CHECK(runs.runs() == 1);
  CHECK(answer(runs, 13, 1) == std::vector<Share>{{1, 13, 1}});
  CHECK(runs.runs() == 0);
  // An answer for more than was published is cut to what was.
  CHECK(answer(runs, 20, 5).empty());
}

TEST_CASE("publish runs: an answer may split a run; id 0 (Redis went away) stays 0") {
  mux::PublishRuns runs;
  for (int i = 0; i < 4; ++i)
    runs.add(7);
  CHECK(answer(runs, 0, 1) == std::vector<Share>{{7, 0, 1}});
  CHECK(runs.runs() == 1);
  CHECK(answer(runs, 5, 3) == std::vector<Share>{{7, 5, 3}});
  CHECK(runs.runs() == 0);
}

TEST_CASE("publish runs: a sender's share may publish more; it queues behind") {
  mux::PublishRuns runs;
  runs.add(1);
  runs.add(2);
  std::vector<Share> shares;
  runs.answered(1, 2, [&](std::uint64_t sender, std::uint64_t first, std::size_t n) {
    shares.emplace_back(sender, first, n);
    if (sender == 1) runs.add(1);  // a held line released by the ack, published now
  });
  CHECK(shares == std::vector<Share>{{1, 1, 1}, {2, 2, 1}});
  CHECK(runs.runs() == 1);
  CHECK(answer(runs, 3, 1) == std::vector<Share>{{1, 3, 1}});
}

TEST_CASE("a new epoch another server reached first starts before its first numbered message") {
  CHECK(mux::last_id_before({}) == 0);
  CHECK(mux::last_id_before({message(0)}) == 0);
  CHECK(mux::last_id_before({message(1)}) == 0);
  mux::chat::RoomEvent joined{mux::chat::RoomEventKind::joined, "Client 2", {}, {}, false, 0};
  CHECK(mux::last_id_before({joined, message(0), message(41), message(42)}) == 40);
}

TEST_CASE("/history takes a plain decimal count only") {
  CHECK(mux::parse_history_count("5") == 5);
  CHECK(mux::parse_history_count("0") == 0);
  CHECK(mux::parse_history_count("18446744073709551615") == UINT64_MAX);
  CHECK_FALSE(mux::parse_history_count(""));
  CHECK_FALSE(mux::parse_history_count("5 "));
  CHECK_FALSE(mux::parse_history_count("-1"));
  CHECK_FALSE(mux::parse_history_count("x"));
  CHECK_FALSE(mux::parse_history_count("18446744073709551616"));
}

TEST_CASE("a writer key is kept as a digest: stable, distinct, never the key") {
  std::string key = "0123456789abcdef0123456789abcdef";
  std::string digest = mux::writer_key(key);
  CHECK(digest.size() == 64);
  CHECK(digest == mux::writer_key(key));
  CHECK(digest != mux::writer_key("0123456789abcdef0123456789abcdee"));
  CHECK(digest.find(key) == std::string::npos);
}
