#include "chat/reconnect_backoff.hpp"

#include <algorithm>

namespace mux::chat {

bool ReconnectBackoff::lost(Clock::time_point now) {
  if (away_since_) return false;
  away_since_ = now;
  return true;
}

bool ReconnectBackoff::expired(Clock::time_point now) const {
  return away_since_ && now - *away_since_ >= give_up_after_;
}

std::chrono::milliseconds ReconnectBackoff::next_wait(Clock::time_point now) {
  if (!away_since_) away_since_ = now;
  auto base = std::min(kFirst * (1 << std::min(attempts_, 5U)), kMax);
  ++attempts_;
  std::uniform_int_distribution<long> half(0, base.count() / 2);
  auto wait = std::chrono::milliseconds(base.count() / 2 + half(random_));
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*away_since_ + give_up_after_ - now);
  return std::clamp(wait, std::chrono::milliseconds{1},
                    std::max(left, std::chrono::milliseconds{1}));
}

std::optional<ReconnectBackoff::Clock::duration> ReconnectBackoff::back(Clock::time_point now) {
  attempts_ = 0;
  if (!away_since_) return std::nullopt;
  auto lasted = now - *away_since_;
  away_since_.reset();
  return lasted;
}

}  // namespace mux::chat
