// ClientNumbers: blocks from the room's counter handed out in order, the spare block, the block
// size policy, and the numbers a server gives on its own while Redis is out of reach.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>

#include "chat/client_numbers.hpp"
#include "chat/room_bus.hpp"

namespace {
using namespace std::chrono_literals;
}  // namespace

TEST_CASE("client numbers: a block, then the spare one asked for ahead of time") {
  mux::ClientNumbers numbers;
  auto now = mux::ClientNumbers::Clock::now();
  CHECK(numbers.in_hand() == 0);
  CHECK(numbers.block_to_ask(now) == 1);
  numbers.received(5, 1);
  CHECK(numbers.in_hand() == 1);
  CHECK(numbers.take() == 5);
  CHECK_FALSE(numbers.running_low());  // blocks of one: asked for per newcomer
  // Newcomers waited: the next blocks double, up to kMaxBlock.
  numbers.grow();
  CHECK(numbers.block_to_ask(now + 100ms) == 2);
  numbers.received(12, 2);
  numbers.grow();
  CHECK(numbers.block_to_ask(now + 200ms) == 4);
  CHECK(numbers.take() == 11);
  CHECK(numbers.running_low());  // 1 left of blocks of 4
  numbers.received(40, 4);       // the spare block, after the one in hand
  CHECK(numbers.in_hand() == 5);
  CHECK(numbers.take() == 12);
  CHECK(numbers.take() == 37);
  CHECK(numbers.take() == 38);
  for (int i = 0; i < 20; ++i)
    numbers.grow();
  CHECK(numbers.block_to_ask(now + 300ms) == mux::ClientNumbers::kMaxBlock);
  // A block that lasted over a second halves the next one.
  CHECK(numbers.block_to_ask(now + 2s) == mux::ClientNumbers::kMaxBlock / 2);
}

TEST_CASE("client numbers: a reconnect drops what is in hand") {
  mux::ClientNumbers numbers;
  numbers.received(10, 4);
  numbers.drop();
  CHECK(numbers.in_hand() == 0);
  numbers.received(3, 1);
  CHECK(numbers.take() == 3);
}

TEST_CASE("client numbers: out of reach, what is in hand first, then this server's slot") {
  mux::ClientNumbers numbers;
  CHECK_FALSE(numbers.outage_number());  // no slot yet, nothing in hand
  numbers.received(8, 2);
  CHECK(numbers.outage_number() == std::optional<std::uint64_t>(7));
  CHECK(numbers.outage_number() == std::optional<std::uint64_t>(8));
  CHECK_FALSE(numbers.outage_number());
  constexpr auto kStride = mux::ClientNumbers::kOutageStride;
  numbers.set_slot(kStride + 3);  // the "slots" counter's 4099th server has slot 3
  CHECK(numbers.has_slot());
  auto first = numbers.outage_number();
  REQUIRE(first);
  CHECK(*first >= mux::RoomBus::kOwnNumbersFrom);
  CHECK(*first % kStride == 3);
  CHECK(*first < mux::RoomBus::kOwnNumbersFrom + kStride);
  CHECK(numbers.outage_number() == std::optional<std::uint64_t>(*first + kStride));
  // Another server's slot never gives the same numbers.
  mux::ClientNumbers other;
  other.set_slot(4);
  auto theirs = other.outage_number();
  REQUIRE(theirs);
  CHECK(*theirs % kStride == 4);
}
