// chat-client's reconnect policy, its queue of lines typed while away and its ledger of lines
// sent (and the room's count of them), outside the client.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "chat/reconnect_backoff.hpp"
#include "chat/resend_queue.hpp"
#include "chat/send_ledger.hpp"
#include "chat/writer_ledger.hpp"

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

TEST_CASE("SendLedger: numbered, a drop's unconfirmed lines go again, those stored never") {
  mux::chat::SendLedger ledger(std::string(32, 'a'));
  CHECK(ledger.request() == std::string("/cap acks ") + std::string(32, 'a') + "\n");
  CHECK(mux::chat::SendLedger::is_message("hi"));
  CHECK(mux::chat::SendLedger::is_message("//not a command"));
  CHECK_FALSE(mux::chat::SendLedger::is_message("/who"));
  CHECK_FALSE(mux::chat::SendLedger::is_message(""));
  CHECK_FALSE(ledger.on_line("* someone else"));
  auto answer = ledger.on_line("* cap acks last=0");
  REQUIRE(answer);
  CHECK(answer->answer);
  CHECK(ledger.resend().empty());
  for (const char* line : {"one", "two", "three", "four"})
    ledger.sent(line);  // numbers 1..4
  CHECK(ledger.on_line("* ack 7"));
  CHECK(ledger.unconfirmed() == 3);
  CHECK(ledger.dropped() == 0);  // kept for the next connection
  CHECK(ledger.unconfirmed() == 3);
  // The next connection's server has stored up to 3: "three" only lost its ack.
  REQUIRE(ledger.on_line("* cap acks last=3"));
  std::vector<std::string> again = ledger.resend();
  CHECK(again == std::vector<std::string>{"four"});
  CHECK(ledger.found_stored() == 2);
  ledger.sent("four");  // number 4 again, as the server counts this connection's from 4
  ledger.sent("five");
  CHECK(ledger.on_line("* ack again"));
  CHECK(ledger.on_line("* ack 0"));
  CHECK(ledger.unconfirmed() == 0);
  CHECK(ledger.local_only() == 1);
  CHECK(ledger.problems("h:1").size() == 1);
}

TEST_CASE("SendLedger: a server that lost the count gets every unconfirmed line again") {
  mux::chat::SendLedger ledger(std::string(32, 'b'));
  REQUIRE(ledger.on_line("* cap acks last=0"));
  ledger.resend();
  ledger.sent("a");
  ledger.sent("b");
  ledger.dropped();
  REQUIRE(ledger.on_line("* cap acks last=0"));  // a restarted server without the Redis count
  CHECK(ledger.resend() == std::vector<std::string>{"a", "b"});
}

TEST_CASE("SendLedger: without numbers a drop's unconfirmed lines are counted, never resent") {
  mux::chat::SendLedger ledger(std::string(32, 'c'));
  REQUIRE(ledger.on_line("* cap acks"));
  CHECK_FALSE(ledger.numbered());
  ledger.sent("x");
  ledger.sent("y");
  CHECK(ledger.dropped() == 2);
  CHECK(ledger.unconfirmed() == 0);
  CHECK(ledger.lost() == 2);
  CHECK(ledger.problems("h:1").size() == 1);
}

TEST_CASE("WriterLedger: a number at or below the stored one is a repeat; bounded") {
  mux::chat::WriterLedger ledger;
  CHECK(ledger.last("k") == 0);
  CHECK(ledger.accept("k", 1));
  CHECK(ledger.accept("k", 2));
  CHECK_FALSE(ledger.accept("k", 2));
  CHECK_FALSE(ledger.accept("k", 1));
  ledger.learn("k", 5);
  CHECK(ledger.last("k") == 5);
  ledger.learn("k", 3);
  CHECK(ledger.last("k") == 5);
  for (std::size_t i = 0; i < mux::chat::WriterLedger::kMaxWriters; ++i)
    ledger.accept(std::to_string(i), 1);
  CHECK(ledger.last("k") == 0);  // the oldest writer was forgotten
  CHECK(ledger.last("0") == 1);
}
