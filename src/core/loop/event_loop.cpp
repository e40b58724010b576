// All epoll_* calls in mux live in this file.
#include "core/loop/event_loop.hpp"

#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <system_error>

namespace mux {
namespace {

constexpr std::size_t kMaxEventsPerBatch = 256;
// How long one turn of the loop writes listed writers before it looks at its fds again.
constexpr std::chrono::microseconds kFlushSlice{2000};
constexpr std::size_t kWritersPerClockRead = 16;

// epoll_ctl failing on an fd we own is a bug in mux, not something the world did: stop loudly.
[[noreturn]] void abort_on_bug(const char* what, int fd, int err) {
  std::fprintf(stderr, "mux: internal error: %s(fd %d): %s\n", what, fd, std::strerror(err));
  std::abort();
}

std::uint64_t pack(int fd, std::uint32_t generation) {
  return (static_cast<std::uint64_t>(generation) << 32) | static_cast<std::uint32_t>(fd);
}

}  // namespace

EventLoop::EventLoop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)), events_(kMaxEventsPerBatch) {
  if (!epoll_) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  sigemptyset(&signal_mask_);
  post_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!post_fd_) throw std::system_error(errno, std::generic_category(), "eventfd");
  watch(post_fd_.get(), EPOLLIN, [this](std::uint32_t) { run_posted(); });
}

EventLoop::~EventLoop() = default;

EventLoop::Watch& EventLoop::watch_for(int fd) {
  if (fd < 0) abort_on_bug("watch", fd, EBADF);
  if (static_cast<std::size_t>(fd) >= watches_.size())
    watches_.resize(static_cast<std::size_t>(fd) + 1);
  return watches_[static_cast<std::size_t>(fd)];
}

void EventLoop::watch(int fd, std::uint32_t interest, IoHandler handler) {
  Watch& w = watch_for(fd);
  if (w.active) abort_on_bug("watch (already watched)", fd, EEXIST);
  ++w.generation;
  epoll_event ev{};
  ev.events = interest;
  ev.data.u64 = pack(fd, w.generation);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) < 0)
    abort_on_bug("epoll_ctl ADD", fd, errno);
  w.handler = std::move(handler);
  w.interest = interest;
  w.active = true;
}

void EventLoop::modify(int fd, std::uint32_t interest) {
  Watch& w = watch_for(fd);
  if (!w.active) abort_on_bug("modify (not watched)", fd, ENOENT);
  if (w.interest == interest) return;
  epoll_event ev{};
  ev.events = interest;
  ev.data.u64 = pack(fd, w.generation);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) < 0)
    abort_on_bug("epoll_ctl MOD", fd, errno);
  w.interest = interest;
}

void EventLoop::unwatch(int fd) {
  if (!watching(fd)) return;
  Watch& w = watches_[static_cast<std::size_t>(fd)];
  // DEL can only fail here if the caller closed the fd before unwatching; that is a bug too.
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) < 0)
    abort_on_bug("epoll_ctl DEL", fd, errno);
  w.active = false;
  w.interest = 0;
  // The handler may be the one running right now (a connection closing itself): keep it alive
  // until the batch is over.
  retired_handlers_.push_back(std::move(w.handler));
  w.handler = nullptr;
}

bool EventLoop::watching(int fd) const {
  return fd >= 0 && static_cast<std::size_t>(fd) < watches_.size() &&
         watches_[static_cast<std::size_t>(fd)].active;
}

std::uint32_t EventLoop::interest(int fd) const {
  return watching(fd) ? watches_[static_cast<std::size_t>(fd)].interest : 0;
}

EventLoop::TimerId EventLoop::add_timer(std::chrono::milliseconds delay, Callback callback) {
  TimerId id = next_timer_id_++;
  Clock::time_point deadline = Clock::now() + delay;
  timers_.emplace(id, Timer{std::move(callback), std::chrono::milliseconds{0}, deadline});
  timer_queue_.emplace(deadline, id);
  return id;
}

EventLoop::TimerId EventLoop::add_periodic(std::chrono::milliseconds interval, Callback callback) {
  TimerId id = add_timer(interval, std::move(callback));
  timers_.at(id).interval = interval;
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  timer_queue_.erase({it->second.deadline, id});
  timers_.erase(it);
}

void EventLoop::on_signal(int signo, Callback callback) {
  sigaddset(&signal_mask_, signo);
  if (::pthread_sigmask(SIG_BLOCK, &signal_mask_, nullptr) != 0) {
    throw std::system_error(errno, std::generic_category(), "pthread_sigmask");
  }
  int fd =
      ::signalfd(signal_fd_ ? signal_fd_.get() : -1, &signal_mask_, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  if (!signal_fd_) {
    signal_fd_.reset(fd);
    watch(fd, EPOLLIN, [this](std::uint32_t) { read_signals(); });
  }
  signal_handlers_[signo] = std::move(callback);
}

void EventLoop::read_signals() {
  signalfd_siginfo info{};
  while (::read(signal_fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    auto it = signal_handlers_.find(static_cast<int>(info.ssi_signo));
    if (it != signal_handlers_.end()) it->second();
  }
}

void EventLoop::defer(Callback callback) {
  deferred_.push_back(std::move(callback));
}

void EventLoop::post(Callback callback) {
  {
    std::lock_guard lock(post_mutex_);
    posted_.push_back(std::move(callback));
  }
  std::uint64_t one = 1;
  // Fails only when the counter is about to overflow, and then the loop is already woken.
  (void)::write(post_fd_.get(), &one, sizeof one);
}

void EventLoop::run_posted() {
  std::uint64_t count = 0;
  (void)::read(post_fd_.get(), &count, sizeof count);
  std::vector<Callback> batch;
  {
    std::lock_guard lock(post_mutex_);
    batch.swap(posted_);
  }
  for (Callback& callback : batch)
    callback();
}

int EventLoop::next_timeout_ms(std::chrono::milliseconds cap) const {
  if (!deferred_.empty() || !flush_list_.empty()) return 0;
  if (timer_queue_.empty()) return static_cast<int>(cap.count());
  auto wait = timer_queue_.begin()->first - Clock::now();
  if (wait <= Clock::duration::zero()) return 0;
  // Round up: waking a little late is fine, waking early would spin until the deadline.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait);
  if (cap.count() >= 0 && ms > cap) ms = cap;
  // epoll_wait takes an int: a far-away timer just means waking once in a while to re-check.
  constexpr std::chrono::milliseconds kLongestWait{std::numeric_limits<int>::max()};
  if (ms > kLongestWait) ms = kLongestWait;
  return static_cast<int>(ms.count());
}

void EventLoop::run_once(std::chrono::milliseconds timeout) {
  int ready = ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()),
                           next_timeout_ms(timeout));
  if (ready < 0) {
    if (errno == EINTR) return;
    throw std::system_error(errno, std::generic_category(), "epoll_wait");
  }
  dispatch_batch(ready);
  run_due_timers();
  finish_batch();
}

void EventLoop::run() {
  stopping_ = false;
  while (!stopping_)
    run_once(std::chrono::milliseconds{-1});
}

void EventLoop::dispatch_batch(int ready) {
  for (int i = 0; i < ready; ++i) {
    std::uint64_t data = events_[static_cast<std::size_t>(i)].data.u64;
    int fd = static_cast<int>(static_cast<std::uint32_t>(data & 0xffffffffu));
    auto generation = static_cast<std::uint32_t>(data >> 32);
    // Skip events for fds unwatched (or unwatched and re-watched) earlier in this batch.
    if (!watching(fd) || watches_[static_cast<std::size_t>(fd)].generation != generation) continue;
    // Call through a copy-free reference: unwatch() moves the handler to retired_handlers_, which
    // keeps the callable alive even if it unwatches itself.
    IoHandler& handler = watches_[static_cast<std::size_t>(fd)].handler;
    IoHandler running = std::move(handler);
    handler = nullptr;
    running(events_[static_cast<std::size_t>(i)].events);
    // Put the handler back unless it was unwatched (or replaced by a new watch) meanwhile.
    if (watching(fd) && watches_[static_cast<std::size_t>(fd)].generation == generation &&
        !watches_[static_cast<std::size_t>(fd)].handler) {
      watches_[static_cast<std::size_t>(fd)].handler = std::move(running);
    }
  }
}

void EventLoop::run_due_timers() {
  Clock::time_point now = Clock::now();
  while (!timer_queue_.empty() && timer_queue_.begin()->first <= now) {
    TimerId id = timer_queue_.begin()->second;
    timer_queue_.erase(timer_queue_.begin());
    auto it = timers_.find(id);
    Callback callback = std::move(it->second.callback);
    std::chrono::milliseconds interval = it->second.interval;
    if (interval.count() > 0) {
      it->second.deadline = now + interval;
      timer_queue_.emplace(it->second.deadline, id);
    } else {
      timers_.erase(it);
    }
    callback();
    // A periodic timer gets its callback back unless it cancelled itself while running.
    if (interval.count() > 0) {
      auto again = timers_.find(id);
      if (again != timers_.end()) again->second.callback = std::move(callback);
    }
  }
}

void EventLoop::finish_batch() {
  // Writers first: what the batch queued goes out now, one write per writer. Deferred work may
  // queue more or defer more (a closing connection tells its owner, who tells the room, which
  // tells everyone): repeat until quiet.
  //
  // A list that takes longer than kFlushSlice to write is finished in the next turns, with a
  // look at the fds (timeout 0) between them: what arrives meanwhile is queued behind what the
  // writers still listed hold, and goes out in the same write (a room of 15,000 members that
  // falls behind its lines writes each member once per pass, not once per line, and no line waits
  // for a whole pass to start). While stopping, everything is written at once.
  Clock::time_point until = Clock::now() + kFlushSlice;
  std::size_t written = 0;
  auto more = [this, until, &written] {
    // The clock is read every 16 writers only: a read costs ~1-4% of a small write here.
    return stopping_ || (++written % kWritersPerClockRead) != 0 || Clock::now() < until;
  };
  for (;;) {
    flush_list_.drain_while([](Flushable& writer) { writer.on_batch_end(); }, more);
    if (deferred_.empty()) break;
    std::vector<Callback> batch;
    batch.swap(deferred_);
    for (Callback& callback : batch)
      callback();
  }
  retired_.clear();
  retired_handlers_.clear();
}

}  // namespace mux
