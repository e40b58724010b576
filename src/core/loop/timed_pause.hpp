// TimedPause: a pause that ends by itself, for flow control (a chat client over its rate is not
// read for a while, in either serve mode). Asking again while it runs moves its end to whichever
// is later. The timer is not re-armed on every call (a timer-queue update each): when it fires
// before the end it is armed again for the rest. Pure timing; what "paused" means is the owner's.
#pragma once

#include <chrono>
#include <functional>

#include "core/loop/event_loop.hpp"

namespace mux {

class TimedPause {
 public:
  // `on_end` runs from the loop when the pause is over (active() is false by then).
  TimedPause(EventLoop& loop, std::function<void()> on_end);
  TimedPause(const TimedPause&) = delete;
  TimedPause& operator=(const TimedPause&) = delete;
  ~TimedPause();

  // Starts a pause of `pause`, or extends the running one to end no earlier than `pause` from
  // now. True when it started now (the owner stops reading then).
  bool extend(std::chrono::milliseconds pause);
  // Ends the pause without on_end (the owner is closing).
  void cancel();
  [[nodiscard]] bool active() const noexcept { return timer_ != 0; }

 private:
  void on_timer();

  EventLoop& loop_;
  std::function<void()> on_end_;
  EventLoop::TimerId timer_ = 0;
  EventLoop::Clock::time_point until_{};
};

}  // namespace mux
