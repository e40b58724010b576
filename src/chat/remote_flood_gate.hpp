// RemoteFloodGate: flood control for the lines other servers relay through the room's bus. A
// remote line is peer input like a local one, so it gets the same per-client limits (kept per
// server and name), and all remote lines together get one more budget so that names invented by
// whoever can write to the bus cannot add their bursts up. A bus cannot be read more slowly
// without stalling the whole room, so a line over its limits is dropped instead, and the first
// drop of each flood is reported (for one log line).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/base/rate_limit.hpp"

namespace mux::chat {

struct RemoteLimits {
  double line_rate = 100;
  double line_burst = 1000;
  double byte_rate = 256 * 1024;
  double byte_burst = 512 * 1024;
};

class RemoteFloodGate {
 public:
  using Clock = TokenBucket::Clock;
  enum class Verdict { pass, drop, first_drop };
  // All remote lines together may send this many times one client's byte rate (their burst stays
  // one client's, below the default --max-queue).
  static constexpr double kTotalRateFactor = 8;
  // Senders tracked at most; past it, lines from senders not yet tracked are dropped until idle
  // ones are forgotten.
  static constexpr std::size_t kMaxSenders = 10'000;

  explicit RemoteFloodGate(RemoteLimits limits);

  // One line of `bytes` from `name` on `server`.
  Verdict admit(std::string_view server, std::string_view name, std::size_t bytes,
                Clock::time_point now);
  // Forgets senders whose buckets are full again (they are as good as new).
  void forget_idle(Clock::time_point now);
  [[nodiscard]] std::size_t senders() const noexcept { return senders_.size(); }

 private:
  struct Sender {
    TokenBucket lines;
    TokenBucket bytes;
    bool flooding = false;
  };

  RemoteLimits limits_;
  TokenBucket total_;
  bool total_flooding_ = false;
  std::unordered_map<std::string, Sender> senders_;
};

}  // namespace mux::chat
