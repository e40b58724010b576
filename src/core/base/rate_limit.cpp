#include "core/base/rate_limit.hpp"

#include <algorithm>

namespace mux {

TokenBucket::TokenBucket(double rate_per_second, double burst, Clock::time_point now)
    : rate_(rate_per_second > 0 ? rate_per_second : 1),
      burst_(burst > 0 ? burst : 1),
      level_(burst_),
      updated_(now) {}

void TokenBucket::refill(Clock::time_point now) {
  if (now <= updated_) return;
  double seconds = std::chrono::duration<double>(now - updated_).count();
  level_ = std::min(burst_, level_ + seconds * rate_);
  updated_ = now;
}

bool TokenBucket::take(double amount, Clock::time_point now) {
  refill(now);
  level_ -= amount;
  return level_ >= 0;
}

bool TokenBucket::take_if_available(double amount, Clock::time_point now) {
  refill(now);
  if (level_ < amount) return false;
  level_ -= amount;
  return true;
}

double TokenBucket::level(Clock::time_point now) const {
  if (now <= updated_) return level_;
  double seconds = std::chrono::duration<double>(now - updated_).count();
  return std::min(burst_, level_ + seconds * rate_);
}

TokenBucket::Clock::duration TokenBucket::time_until(double wanted, Clock::time_point now) const {
  double missing = std::min(wanted, burst_) - level(now);
  if (missing <= 0) return Clock::duration::zero();
  return std::chrono::ceil<Clock::duration>(std::chrono::duration<double>(missing / rate_));
}

}  // namespace mux
