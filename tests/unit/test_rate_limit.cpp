// TokenBucket: the per-client rate limits' arithmetic, driven with a fake clock.
#include <doctest/doctest.h>

#include <chrono>

#include "core/base/rate_limit.hpp"

using mux::TokenBucket;
using namespace std::chrono_literals;

TEST_CASE("a bucket starts full, allows its burst, then refills at its rate") {
  TokenBucket::Clock::time_point t0{};
  TokenBucket bucket(10, 5, t0);
  for (int i = 0; i < 5; ++i)
    CHECK(bucket.take(1, t0));
  CHECK_FALSE(bucket.take(1, t0));
  CHECK(bucket.level(t0) == doctest::Approx(-1));
  CHECK(bucket.time_until(0, t0) >= 100ms);
  CHECK(bucket.time_until(0, t0) < 101ms);
  CHECK(bucket.level(t0 + 100ms) == doctest::Approx(0));
  CHECK(bucket.take(1, t0 + 200ms));
  CHECK(bucket.level(t0 + 10s) == doctest::Approx(5));  // never above the burst
  CHECK(bucket.time_until(3, t0 + 10s) == TokenBucket::Clock::duration::zero());
}

TEST_CASE("a large take leaves a debt that time pays off") {
  TokenBucket::Clock::time_point t0{};
  TokenBucket bucket(1000, 1000, t0);
  CHECK_FALSE(bucket.take(65536, t0));
  CHECK(bucket.time_until(0, t0) > 64s);
  CHECK(bucket.time_until(0, t0) < 65s);
  CHECK(bucket.level(t0 + 65s) > 0);
}

TEST_CASE("time going backwards changes nothing") {
  TokenBucket::Clock::time_point t0 = TokenBucket::Clock::time_point{} + 10s;
  TokenBucket bucket(1, 1, t0);
  CHECK(bucket.take(1, t0));
  CHECK(bucket.level(t0 - 5s) == doctest::Approx(0));
  CHECK_FALSE(bucket.take(1, t0 - 5s));
}

TEST_CASE("take_if_available refuses without leaving a debt") {
  TokenBucket::Clock::time_point t0{};
  TokenBucket bucket(2, 2, t0);
  CHECK(bucket.take_if_available(2, t0));
  CHECK_FALSE(bucket.take_if_available(1, t0));
  CHECK(bucket.level(t0) == doctest::Approx(0));
  CHECK(bucket.time_until(1, t0) > 499ms);
  CHECK(bucket.take_if_available(1, t0 + 500ms));
}
