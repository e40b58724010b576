// chat-client's reconnect policy and its queue of lines typed while away, outside the client.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "chat/reconnect_backoff.hpp"
#include "chat/resend_queue.hpp"

using namespace std::chrono_literals;
using mux::chat::ReconnectBackoff;
using mux::chat::ResendQueue;

TEST_CASE("ReconnectBackoff: waits from the upper half of a doubling base, capped, then gives up") {
  ReconnectBackoff backoff(30s, 7);
  auto t = ReconnectBackoff::Clock::time_point{} + 100s;
  CHECK_FALSE(backoff.away());
  CHECK(backoff.lost(t));
  CHECK_FALSE(backoff.lost(t + 1s));  // the same outage
  std::chrono::milliseconds base = ReconnectBackoff::kFirst;
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto wait = backoff.next_wait(t);
    CHECK(wait >= base / 2);
    CHECK(wait <= base);
    base = std::min(base * 2, ReconnectBackoff::kMax);
  }
  CHECK_FALSE(backoff.expired(t + 29s));
  CHECK(backoff.expired(t + 30s));
  // Near the end a wait never reaches past it.
  CHECK(backoff.next_wait(t + 29'900ms) <= 100ms);
  // Back: how long it lasted, and the next outage starts from the first wait again.
  auto lasted = backoff.back(t + 3s);
  REQUIRE(lasted);
  CHECK(*lasted == 3s);
  CHECK_FALSE(backoff.away());
  CHECK_FALSE(backoff.back(t + 4s));
  CHECK(backoff.lost(t + 10s));
  CHECK(backoff.next_wait(t + 10s) <= ReconnectBackoff::kFirst);
}

TEST_CASE("ReconnectBackoff: clients seeded differently spread their waits") {
  std::vector<long> waits;
  for (std::uint32_t seed = 1; seed <= 50; ++seed) {
    ReconnectBackoff backoff(30s, seed);
    waits.push_back(backoff.next_wait(ReconnectBackoff::Clock::time_point{}).count());
  }
  std::sort(waits.begin(), waits.end());
  CHECK(waits.back() - waits.front() >= 50);  // 100 to 200 ms, not one instant
}

TEST_CASE("ResendQueue: in order, bounded by bytes, counted when given up") {
  ResendQueue queue(10);
  CHECK(queue.unsent_note().empty());
  queue.push("hello");
  CHECK_FALSE(queue.full());
  queue.push("world");  // 12 bytes with the newlines
  CHECK(queue.full());
  CHECK(queue.bytes() == 12);
  CHECK(queue.unsent_note() == "; 2 typed lines not sent");
  CHECK(queue.take() == std::vector<std::string>{"hello", "world"});
  CHECK(queue.empty());
  CHECK(queue.bytes() == 0);
  queue.push("x");
  CHECK(queue.unsent_note() == "; 1 typed line not sent");
}
