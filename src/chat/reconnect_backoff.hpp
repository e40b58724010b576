// ReconnectBackoff: when chat-client tries again after its connection dropped, and when it gives
// up. The first attempt waits about kFirst, each next one twice as long up to kMax; each wait is
// drawn at random from its upper half (jitter), so clients a restart dropped together do not all
// come back in the same instant; an outage ends the run once it has lasted --reconnect-timeout.
// Pure (the caller's clock, a seeded generator), so it is unit tested.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>

namespace mux::chat {

class ReconnectBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirst{200};
  static constexpr std::chrono::milliseconds kMax{5000};

  ReconnectBackoff(std::chrono::milliseconds give_up_after, std::uint32_t seed)
      : give_up_after_(give_up_after), random_(seed) {}

  // The connection dropped (or an attempt failed) at `now`: true when this starts an outage.
  bool lost(Clock::time_point now);
  // The outage has lasted the whole --reconnect-timeout.
  [[nodiscard]] bool expired(Clock::time_point now) const;
  // The wait before the next attempt: never past the end of the timeout, at least 1 ms.
  std::chrono::milliseconds next_wait(Clock::time_point now);
  // Back in: how long the outage lasted (nullopt when there was none); the next one starts over
  // from the first wait.
  std::optional<Clock::duration> back(Clock::time_point now);
  [[nodiscard]] bool away() const noexcept { return away_since_.has_value(); }
  [[nodiscard]] std::chrono::milliseconds give_up_after() const noexcept { return give_up_after_; }

 private:
  std::chrono::milliseconds give_up_after_;
  std::optional<Clock::time_point> away_since_;
  unsigned attempts_ = 0;
  std::mt19937 random_;
};

}  // namespace mux::chat
