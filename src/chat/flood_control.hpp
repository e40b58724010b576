// FloodControl: what one chat client may send, per second and at once, as decisions. The room
// charges each line and each command to the sender's ClientRates and acts on the answer (tell
// it to slow down, read it more slowly, drop the command, disconnect it); this class does no
// I/O and takes the time from its caller, so tests drive it without sleeping.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/base/rate_limit.hpp"

namespace mux {

// What one client may send, per second and at once (the burst). Defaults are generous for people
// and chat bots (see chat-server's flags); a client over them is read more slowly and, if it
// keeps on for flood_timeout, told and disconnected.
struct ClientLimits {
  double line_rate = 100;
  double line_burst = 1000;
  double byte_rate = 256 * 1024;
  double byte_burst = 512 * 1024;
  double command_rate = 10;
  double command_burst = 50;
  std::chrono::milliseconds flood_timeout{10'000};
};

// A client's token buckets and flood state, made at its first line: a fresh bucket is full, as
// one made at the join would be by then, and a member that never speaks (most of a big room)
// carries none of its 128 bytes (issue 25).
struct ClientRates {
  TokenBucket lines;
  TokenBucket bytes;
  TokenBucket commands;
  std::optional<TokenBucket::Clock::time_point> flooding_since;
  std::optional<TokenBucket::Clock::time_point> last_command_notice;
};

class FloodControl {
 public:
  using Clock = TokenBucket::Clock;
  // A client over its command rate hears about it at most this often.
  static constexpr std::chrono::seconds kCommandNoticeInterval{1};

  // What to do with a line that was read (it cannot be un-read).
  struct LineCharge {
    // False: it has been over its limits for flood_timeout: tell it and disconnect it (the line
    // is not handled).
    bool handle = true;
    // Its first line over the limits: log it and tell the client to slow down.
    bool flood_started = false;
    // Non-zero: read nothing more from it for this long (what it sent is paid for by then).
    std::chrono::milliseconds pause{0};
  };
  // What to do with a command.
  struct CommandCharge {
    // False: over the command rate: the command is dropped, not queued (answers to a storm of
    // /who would be output the client caused).
    bool run = true;
    // Tell the client commands are ignored (at most once per kCommandNoticeInterval).
    bool notice = false;
    // Its first notice ever: worth a log line.
    bool first_notice = false;
    std::chrono::milliseconds pause{0};
  };

  explicit FloodControl(ClientLimits limits) : limits_(limits) {}

  [[nodiscard]] const ClientLimits& limits() const noexcept { return limits_; }
  // flood_timeout in whole seconds, as the client is told it.
  [[nodiscard]] std::uint64_t flood_timeout_seconds() const noexcept;

  // Charges a line of `bytes` (its newline included); `rates` is made at the first charge.
  LineCharge charge_line(std::unique_ptr<ClientRates>& rates, std::size_t bytes,
                         Clock::time_point now) const;
  // Charges a command (after its line was charged).
  CommandCharge charge_command(std::unique_ptr<ClientRates>& rates, Clock::time_point now) const;

 private:
  ClientRates& rates_of(std::unique_ptr<ClientRates>& rates, Clock::time_point now) const;

  ClientLimits limits_;
};

}  // namespace mux
