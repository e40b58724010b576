// ConfirmWatch: chat-client's --confirm-timeout, from the end of input until the server's close
// (its proof that it read everything we sent). Progress is our unsent bytes going down, in our
// queue or the kernel's: a server reading slowly, as flow control does, is still reading; once
// all are taken, only its close counts. The watch gives up after the timeout without progress.
// Pure: the caller samples the bytes on its timer; unit tested in-process.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace mux::chat {

class ConfirmWatch {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Verdict {
    waiting,     // progress, or not long enough without
    not_taken,   // bytes are still unsent after the timeout without progress
    not_closed,  // all were taken, but the server did not close within the timeout
  };

  explicit ConfirmWatch(std::chrono::milliseconds timeout) : timeout_(timeout) {}

  // The input ended with `unsent` bytes not yet acknowledged by the server's host.
  void start(std::size_t unsent, Clock::time_point now) {
    last_unsent_ = unsent;
    last_progress_ = now;
  }
  // A sample on the caller's timer.
  [[nodiscard]] Verdict check(std::size_t unsent, Clock::time_point now) {
    if (unsent < last_unsent_) {
      last_unsent_ = unsent;
      last_progress_ = now;
      return Verdict::waiting;
    }
    if (now - last_progress_ < timeout_) return Verdict::waiting;
    return unsent > 0 ? Verdict::not_taken : Verdict::not_closed;
  }
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  // The error line for a verdict other than waiting (`unsent`: the bytes of the last sample).
  [[nodiscard]] std::string failure(Verdict verdict, std::string_view server,
                                    std::size_t unsent) const;

 private:
  std::chrono::milliseconds timeout_;
  std::size_t last_unsent_ = 0;
  Clock::time_point last_progress_;
};

}  // namespace mux::chat
