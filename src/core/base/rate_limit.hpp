// TokenBucket: a rate with a burst allowance, for limits like "100 lines per second, 1000 at
// once". It starts full; each use takes tokens and time puts them back at `rate` per second up to
// `burst`. Taking more than is there leaves a debt (the bytes were already read and cannot be
// un-read), and the owner stops reading until time has paid it off. Pure: the caller passes the
// time, so tests drive it without sleeping. Used per chat client by ChatRoom.
#pragma once

#include <chrono>

namespace mux {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  TokenBucket(double rate_per_second, double burst, Clock::time_point now);

  // Takes `amount` tokens; false when that left the bucket in debt.
  bool take(double amount, Clock::time_point now);
  // Takes `amount` tokens only if they are there (for work that can be refused, not undone).
  bool take_if_available(double amount, Clock::time_point now);
  // The tokens there are at `now` (negative while in debt).
  [[nodiscard]] double level(Clock::time_point now) const;
  // How long until the level is back to `wanted` (zero when it is there already).
  [[nodiscard]] Clock::duration time_until(double wanted, Clock::time_point now) const;

  [[nodiscard]] double rate() const noexcept { return rate_; }
  [[nodiscard]] double burst() const noexcept { return burst_; }

 private:
  void refill(Clock::time_point now);

  double rate_;
  double burst_;
  double level_;
  Clock::time_point updated_;
};

}  // namespace mux
