// EventLoop: owns one epoll instance and everything that wakes it — fds, timers and signals (read
// through a signalfd). Subcommands register handlers and call run(); nothing else in mux calls
// epoll_*. Dispatch is safe against handlers that drop connections: a fired event whose fd was
// unwatched earlier in the same batch is skipped (a generation number travels with each event),
// and objects handed to retire() are destroyed only after the batch is done.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/loop/fd.hpp"
#include "core/loop/flush_list.hpp"

namespace mux {

class EventLoop {
 public:
  using IoHandler = std::function<void(std::uint32_t events)>;
  using Callback = std::function<void()>;
  using TimerId = std::uint64_t;
  using Clock = std::chrono::steady_clock;

  // A writer that coalesces its output per batch (Connection): it asks for
  // flush_at_batch_end() on every send, and the loop calls on_batch_end() once when the batch's
  // events and timers are done: one write per writer per batch however many sends it got.
  class Flushable {
   public:
    virtual void on_batch_end() = 0;

   protected:
    Flushable() = default;
    ~Flushable() = default;
    Flushable(const Flushable&) = delete;
    Flushable& operator=(const Flushable&) = delete;

   private:
    friend class EventLoop;
    FlushList<Flushable>::Entry flush_entry_;
  };

  EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;
  ~EventLoop();

  // Registers fd with an interest set (EPOLLIN, EPOLLOUT, ...). The handler receives the fired
  // events. The fd stays owned by the caller, who must unwatch() it before closing it.
  void watch(int fd, std::uint32_t interest, IoHandler handler);
  void modify(int fd, std::uint32_t interest);
  void unwatch(int fd);
  [[nodiscard]] bool watching(int fd) const;
  [[nodiscard]] std::uint32_t interest(int fd) const;

  // One-shot timer; returns an id for cancel_timer(). Timers with equal deadlines fire in the
  // order they were added.
  TimerId add_timer(std::chrono::milliseconds delay, Callback callback);
  // Repeats every `interval` until cancelled.
  TimerId add_periodic(std::chrono::milliseconds interval, Callback callback);
  // Cancelling an unknown, fired or zero id is a no-op, so callers may keep stale ids.
  void cancel_timer(TimerId id);

  // Blocks `signo` for this thread and delivers it through the loop instead (signalfd).
  void on_signal(int signo, Callback callback);

  // Runs `callback` once the current batch of events has been dispatched.
  void defer(Callback callback);
  // Calls writer.on_batch_end() once when this batch ends (before its deferred callbacks; again
  // after them if they flush_at_batch_end() anew), however often it is asked. Costs no allocation.
  // When the writers listed take more than ~2 ms, the rest are called in the next turns, in
  // order, after a look at the fds that waits for nothing (see finish_batch).
  // A writer being destroyed, or one that wrote on its own, calls cancel_flush().
  void flush_at_batch_end(Flushable& writer) { flush_list_.add(writer, writer.flush_entry_); }
  void cancel_flush(Flushable& writer) noexcept { flush_list_.remove(writer.flush_entry_); }
  // The one member another thread may call: runs `callback` on the loop's thread at its next turn
  // (an eventfd wakes the loop). A helper thread hands its results back this way. Callbacks still
  // pending when the loop is destroyed are destroyed without running.
  void post(Callback callback);
  // Keeps `object` alive until the current batch is done, then destroys it. This is how a
  // connection closes itself from inside its own handler.
  template <class T>
  void retire(std::unique_ptr<T> object) {
    retired_.push_back(std::shared_ptr<void>(std::move(object)));
  }

  // Dispatches until stop(). Throws std::system_error if epoll_wait fails.
  void run();
  // Runs at most one batch, waiting at most `timeout` (tests drive the loop step by step).
  void run_once(std::chrono::milliseconds timeout);
  void stop() noexcept { stopping_ = true; }
  [[nodiscard]] bool stopping() const noexcept { return stopping_; }

 private:
  struct Watch {
    IoHandler handler;
    std::uint32_t generation = 0;
    std::uint32_t interest = 0;
    bool active = false;
  };
  struct Timer {
    Callback callback;
    std::chrono::milliseconds interval{0};  // zero for one-shot
    Clock::time_point deadline;
  };

  void dispatch_batch(int ready);
  void run_due_timers();
  void finish_batch();
  void read_signals();
  void run_posted();
  [[nodiscard]] int next_timeout_ms(std::chrono::milliseconds cap) const;
  Watch& watch_for(int fd);

  Fd epoll_;
  Fd signal_fd_;
  sigset_t signal_mask_{};
  std::unordered_map<int, Callback> signal_handlers_;
  std::vector<Watch> watches_;  // indexed by fd: O(1) and no hashing on the hot path
  std::vector<IoHandler> retired_handlers_;
  std::vector<std::shared_ptr<void>> retired_;
  std::vector<Callback> deferred_;
  FlushList<Flushable> flush_list_;  // writers to flush when the batch ends
  std::set<std::pair<Clock::time_point, TimerId>> timer_queue_;  // ordered by deadline, then id
  std::unordered_map<TimerId, Timer> timers_;
  TimerId next_timer_id_ = 1;
  std::vector<epoll_event> events_;
  bool stopping_ = false;
  Fd post_fd_;  // eventfd: readable while posted_ holds callbacks
  std::mutex post_mutex_;
  std::vector<Callback> posted_;  // guarded by post_mutex_
};

}  // namespace mux
