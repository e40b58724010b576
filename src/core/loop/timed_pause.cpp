#include "core/loop/timed_pause.hpp"

#include <utility>

namespace mux {

TimedPause::TimedPause(EventLoop& loop, std::function<void()> on_end)
    : loop_(loop), on_end_(std::move(on_end)) {}

TimedPause::~TimedPause() {
  cancel();
}

bool TimedPause::extend(std::chrono::milliseconds pause) {
  auto until = EventLoop::Clock::now() + pause;
  if (until > until_) until_ = until;
  if (timer_ != 0) return false;
  timer_ = loop_.add_timer(pause, [this] { on_timer(); });
  return true;
}

void TimedPause::cancel() {
  loop_.cancel_timer(std::exchange(timer_, 0));
}

void TimedPause::on_timer() {
  timer_ = 0;
  auto left = until_ - EventLoop::Clock::now();
  if (left > EventLoop::Clock::duration::zero()) {
    timer_ =
        loop_.add_timer(std::chrono::ceil<std::chrono::milliseconds>(left), [this] { on_timer(); });
    return;
  }
  on_end_();
}

}  // namespace mux
