// EventLoop: dispatch safety when handlers drop fds, timers, signals through the signalfd, defer
// and stop. Readiness comes from eventfds, which are readable while their counter is non-zero.
#include <doctest/doctest.h>

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/timed_pause.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// An eventfd that is readable from the start (counter 1).
mux::Fd readable_fd() {
  mux::Fd fd(::eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC));
  REQUIRE(fd.valid());
  return fd;
}

// Stops the loop after `limit` if a test would otherwise hang; a failure, not a wait.
struct HangGuard {
  mux::EventLoop& loop;
  mux::EventLoop::TimerId id;
  bool fired = false;
  HangGuard(mux::EventLoop& event_loop, std::chrono::milliseconds limit)
      : loop(event_loop), id(event_loop.add_timer(limit, [this] {
          fired = true;
          loop.stop();
        })) {}
  ~HangGuard() { loop.cancel_timer(id); }
};

struct DestructionFlag {
  bool& destroyed;
  explicit DestructionFlag(bool& flag) : destroyed(flag) {}
  ~DestructionFlag() { destroyed = true; }
};

}  // namespace

TEST_CASE("EventLoop: watch, modify and unwatch are reflected in watching() and interest()") {
  mux::EventLoop loop;
  mux::Fd fd = readable_fd();
  CHECK_FALSE(loop.watching(fd.get()));
  CHECK(loop.interest(fd.get()) == 0);
  loop.watch(fd.get(), EPOLLIN, [](std::uint32_t) {});
  CHECK(loop.watching(fd.get()));
  CHECK(loop.interest(fd.get()) == EPOLLIN);
  loop.modify(fd.get(), EPOLLIN | EPOLLOUT);
  CHECK(loop.interest(fd.get()) == (EPOLLIN | EPOLLOUT));
  loop.unwatch(fd.get());
  CHECK_FALSE(loop.watching(fd.get()));
  CHECK(loop.interest(fd.get()) == 0);
  loop.unwatch(fd.get());  // a second unwatch is harmless
  CHECK_FALSE(loop.watching(-1));
  CHECK_FALSE(loop.watching(1 << 20));
}

TEST_CASE("EventLoop: a ready fd's handler gets the fired events") {
  mux::EventLoop loop;
  mux::Fd fd = readable_fd();
  std::vector<std::uint32_t> fired;
  loop.watch(fd.get(), EPOLLIN, [&](std::uint32_t events) { fired.push_back(events); });
  loop.run_once(1000ms);
  CHECK(fired == std::vector<std::uint32_t>{EPOLLIN});
  loop.unwatch(fd.get());
}

TEST_CASE("EventLoop: an fd unwatched and closed by an earlier handler in the batch is skipped") {
  mux::EventLoop loop;
  mux::Fd first = readable_fd();
  mux::Fd second = readable_fd();
  // Both are ready in one batch. Whichever handler runs first drops the other one, so exactly
  // one handler may run (epoll's order within a batch is not specified).
  std::vector<std::string> ran;
  loop.watch(first.get(), EPOLLIN, [&](std::uint32_t) {
    ran.emplace_back("first");
    loop.unwatch(second.get());
    second.reset();
  });
  loop.watch(second.get(), EPOLLIN, [&](std::uint32_t) {
    ran.emplace_back("second");
    loop.unwatch(first.get());
    first.reset();
  });
  loop.run_once(1000ms);
  REQUIRE(ran.size() == 1);
  mux::Fd& survivor = ran[0] == "first" ? first : second;
  CHECK(survivor.valid());
  CHECK_FALSE((ran[0] == "first" ? second : first).valid());
  loop.unwatch(survivor.get());
}

TEST_CASE("EventLoop: a stale event is skipped even when its fd number is reused in the batch") {
  mux::EventLoop loop;
  mux::Fd first = readable_fd();
  mux::Fd second = readable_fd();
  mux::Fd replacement;
  std::vector<std::string> ran;
  // Whichever runs first closes the other, opens a new ready fd (the kernel hands out the lowest
  // free number: the one just closed) and watches it. The old event in this batch carries the
  // old generation and must not reach the new handler.
  auto drop_and_replace = [&](mux::Fd& other) {
    int old_number = other.get();
    loop.unwatch(old_number);
    other.reset();
    replacement = readable_fd();
    CHECK(replacement.get() == old_number);
    loop.watch(replacement.get(), EPOLLIN, [&](std::uint32_t) { ran.emplace_back("new"); });
  };
  loop.watch(first.get(), EPOLLIN, [&](std::uint32_t) {
    ran.emplace_back("old");
    drop_and_replace(second);
  });
  loop.watch(second.get(), EPOLLIN, [&](std::uint32_t) {
    ran.emplace_back("old");
    drop_and_replace(first);
  });
  loop.run_once(1000ms);
  CHECK(ran == std::vector<std::string>{"old"});
  // The survivor is unwatched so only the replacement can fire in the next batch.
  loop.unwatch((first.valid() ? first : second).get());
  loop.run_once(1000ms);
  CHECK(ran == std::vector<std::string>{"old", "new"});
  loop.unwatch(replacement.get());
}

TEST_CASE("EventLoop: a handler may unwatch and close its own fd; its captures stay alive") {
  mux::EventLoop loop;
  mux::Fd fd = readable_fd();
  auto name = std::make_shared<std::string>("connection 1");
  std::weak_ptr<std::string> watch_name = name;
  std::vector<std::string> log;
  loop.watch(fd.get(), EPOLLIN, [&, name](std::uint32_t) {
    loop.unwatch(fd.get());
    fd.reset();
    log.push_back(*name + " closed");  // the lambda (and `name`) must still be alive here
  });
  name.reset();
  CHECK_FALSE(watch_name.expired());  // held by the handler only
  loop.run_once(1000ms);
  CHECK(log == std::vector<std::string>{"connection 1 closed"});
  CHECK(watch_name.expired());  // the handler was released after the batch
  loop.run_once(0ms);
  CHECK(log.size() == 1);
}

TEST_CASE("EventLoop: a retired object outlives the batch it was retired in, then is destroyed") {
  mux::EventLoop loop;
  mux::Fd first = readable_fd();
  mux::Fd second = readable_fd();
  bool destroyed = false;
  bool alive_in_second_handler = false;
  bool alive_in_deferred = false;
  int handlers_run = 0;
  auto handler = [&](std::uint32_t) {
    ++handlers_run;
    if (handlers_run == 1) {
      loop.retire(std::make_unique<DestructionFlag>(destroyed));
      CHECK_FALSE(destroyed);
      loop.defer([&] { alive_in_deferred = !destroyed; });
    } else {
      alive_in_second_handler = !destroyed;
    }
  };
  loop.watch(first.get(), EPOLLIN, handler);
  loop.watch(second.get(), EPOLLIN, handler);
  loop.run_once(1000ms);
  CHECK(handlers_run == 2);
  CHECK(alive_in_second_handler);
  CHECK(alive_in_deferred);
  CHECK(destroyed);
  loop.unwatch(first.get());
  loop.unwatch(second.get());
}

TEST_CASE("EventLoop: timers fire in deadline order, never before their deadline") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  std::vector<std::string> order;
  Clock::time_point start = Clock::now();
  std::vector<Clock::duration> waited(3);
  loop.add_timer(60ms, [&] {
    order.emplace_back("60ms");
    waited[2] = Clock::now() - start;
    loop.stop();
  });
  loop.add_timer(20ms, [&] {
    order.emplace_back("20ms");
    waited[0] = Clock::now() - start;
  });
  loop.add_timer(40ms, [&] {
    order.emplace_back("40ms");
    waited[1] = Clock::now() - start;
  });
  loop.run();
  CHECK_FALSE(guard.fired);
  CHECK(order == std::vector<std::string>{"20ms", "40ms", "60ms"});
  CHECK(waited[0] >= 20ms);
  CHECK(waited[1] >= 40ms);
  CHECK(waited[2] >= 60ms);
}

TEST_CASE("EventLoop: timers with the same delay fire in the order they were added") {
  mux::EventLoop loop;
  std::vector<int> order;
  for (int i = 0; i < 10; ++i)
    loop.add_timer(5ms, [&order, i] { order.push_back(i); });
  loop.add_timer(0ms, [&order] { order.push_back(-1); });
  for (int round = 0; round < 100 && order.size() < 11; ++round)
    loop.run_once(1000ms);
  CHECK(order == std::vector<int>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST_CASE("EventLoop: a zero-delay timer fires on the next run_once without waiting") {
  mux::EventLoop loop;
  bool fired = false;
  loop.add_timer(0ms, [&] { fired = true; });
  loop.run_once(10s);  // hangs guard: would block 10 s if the timer were not counted
  CHECK(fired);
}

TEST_CASE("EventLoop: a timer that has not reached its deadline does not fire") {
  mux::EventLoop loop;
  bool fired = false;
  loop.add_timer(1h, [&] { fired = true; });
  loop.run_once(0ms);
  loop.run_once(10ms);
  CHECK_FALSE(fired);
}

TEST_CASE("EventLoop: cancel_timer") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  std::vector<std::string> order;
  loop.add_timer(10ms, [&] { order.emplace_back("a"); });
  mux::EventLoop::TimerId b = loop.add_timer(20ms, [&] { order.emplace_back("b"); });
  loop.add_timer(30ms, [&] {
    order.emplace_back("c");
    loop.stop();
  });
  loop.cancel_timer(b);
  loop.cancel_timer(b);  // twice: a no-op
  loop.cancel_timer(0);  // zero id: a no-op
  loop.run();
  CHECK_FALSE(guard.fired);
  CHECK(order == std::vector<std::string>{"a", "c"});
}

TEST_CASE("EventLoop: a timer may cancel another that is due in the same pass") {
  mux::EventLoop loop;
  std::vector<std::string> order;
  mux::EventLoop::TimerId victim = 0;
  loop.add_timer(0ms, [&] {
    order.emplace_back("canceller");
    loop.cancel_timer(victim);
  });
  victim = loop.add_timer(0ms, [&] { order.emplace_back("victim"); });
  loop.add_timer(0ms, [&] { order.emplace_back("bystander"); });
  loop.run_once(1000ms);
  CHECK(order == std::vector<std::string>{"canceller", "bystander"});
  loop.run_once(10ms);
  CHECK(order == std::vector<std::string>{"canceller", "bystander"});
}

TEST_CASE("EventLoop: cancelling a fired one-shot timer's stale id is a no-op") {
  mux::EventLoop loop;
  int fired = 0;
  mux::EventLoop::TimerId id = loop.add_timer(0ms, [&] { ++fired; });
  bool later = false;
  loop.run_once(1000ms);
  CHECK(fired == 1);
  loop.add_timer(0ms, [&] { later = true; });  // a new id: not the stale one
  loop.cancel_timer(id);
  loop.run_once(1000ms);
  CHECK(later);
  CHECK(fired == 1);
}

TEST_CASE("EventLoop: a periodic timer repeats until it cancels itself") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  int ticks = 0;
  mux::EventLoop::TimerId id = 0;
  Clock::time_point start = Clock::now();
  id = loop.add_periodic(5ms, [&] {
    ++ticks;
    if (ticks == 3) {
      loop.cancel_timer(id);
      loop.stop();
    }
  });
  loop.run();
  CHECK_FALSE(guard.fired);
  CHECK(ticks == 3);
  CHECK(Clock::now() - start >= 15ms);
  loop.run_once(30ms);  // no fourth tick
  CHECK(ticks == 3);
}

TEST_CASE("EventLoop: a periodic timer cancelled from outside stops ticking") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  int ticks = 0;
  mux::EventLoop::TimerId periodic = loop.add_periodic(2ms, [&] {
    ++ticks;
    if (ticks == 2) loop.stop();
  });
  loop.run();
  CHECK(ticks == 2);
  loop.cancel_timer(periodic);
  loop.run_once(20ms);
  CHECK(ticks == 2);
}

namespace {

// Blocks nothing itself; remembers the thread's signal mask and puts it back, so a test that
// routes signals through a signalfd leaves the process as it found it.
struct SignalMaskGuard {
  sigset_t saved{};
  SignalMaskGuard() { ::pthread_sigmask(SIG_SETMASK, nullptr, &saved); }
  ~SignalMaskGuard() { ::pthread_sigmask(SIG_SETMASK, &saved, nullptr); }
};

}  // namespace

TEST_CASE("EventLoop: signals are delivered through the loop") {
  SignalMaskGuard mask_guard;
  std::vector<std::string> received;
  {
    mux::EventLoop loop;
    loop.on_signal(SIGUSR1, [&] { received.emplace_back("USR1"); });
    loop.on_signal(SIGUSR2, [&] { received.emplace_back("USR2"); });
    sigset_t blocked;
    ::pthread_sigmask(SIG_SETMASK, nullptr, &blocked);
    CHECK(sigismember(&blocked, SIGUSR1) == 1);
    CHECK(sigismember(&blocked, SIGUSR2) == 1);

    REQUIRE(::raise(SIGUSR1) == 0);  // blocked: pending, not delivered as a signal
    CHECK(received.empty());
    loop.run_once(1000ms);
    CHECK(received == std::vector<std::string>{"USR1"});

    REQUIRE(::kill(::getpid(), SIGUSR2) == 0);
    loop.run_once(1000ms);
    CHECK(received == std::vector<std::string>{"USR1", "USR2"});

    loop.run_once(0ms);  // consumed: no repeat
    CHECK(received.size() == 2);

    sigset_t pending;
    ::sigpending(&pending);
    CHECK(sigismember(&pending, SIGUSR1) == 0);
    CHECK(sigismember(&pending, SIGUSR2) == 0);
  }
}

TEST_CASE("EventLoop: deferred callbacks run after the batch, before run_once returns") {
  mux::EventLoop loop;
  mux::Fd first = readable_fd();
  mux::Fd second = readable_fd();
  std::vector<std::string> order;
  auto handler = [&](std::uint32_t) {
    order.emplace_back("handler");
    if (order.size() == 1) {
      loop.defer([&] {
        order.emplace_back("deferred");
        loop.defer([&] { order.emplace_back("deferred by deferred"); });
      });
    }
  };
  loop.watch(first.get(), EPOLLIN, handler);
  loop.watch(second.get(), EPOLLIN, handler);
  loop.add_timer(0ms, [&] { order.emplace_back("timer"); });
  loop.run_once(1000ms);
  CHECK(order == std::vector<std::string>{"handler", "handler", "timer", "deferred",
                                          "deferred by deferred"});
  loop.unwatch(first.get());
  loop.unwatch(second.get());
}

TEST_CASE("EventLoop: a callback deferred outside any batch does not wait for events") {
  mux::EventLoop loop;
  bool ran = false;
  loop.defer([&] { ran = true; });
  loop.run_once(10s);  // hangs guard: must return at once
  CHECK(ran);
}

TEST_CASE("EventLoop: stop() from a handler ends run() after the batch; run() can start again") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  mux::Fd fd = readable_fd();
  int calls = 0;
  bool deferred_ran = false;
  loop.watch(fd.get(), EPOLLIN, [&](std::uint32_t) {
    ++calls;
    loop.stop();
    loop.defer([&] { deferred_ran = true; });
  });
  loop.run();  // the eventfd stays readable: without stop() this would spin until the guard
  CHECK_FALSE(guard.fired);
  CHECK(calls == 1);
  CHECK(deferred_ran);
  CHECK(loop.stopping());

  loop.run();  // stopping is reset on entry; the still-readable fd stops it again
  CHECK(calls == 2);
  loop.unwatch(fd.get());
}

TEST_CASE("EventLoop: stop() from a timer ends run()") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  bool stopped_by_timer = false;
  loop.add_timer(5ms, [&] {
    stopped_by_timer = true;
    loop.stop();
  });
  loop.run();
  CHECK(stopped_by_timer);
  CHECK_FALSE(guard.fired);
}

namespace {

// A writer as Connection is: asks for the batch's end on every send.
struct CountingWriter final : mux::EventLoop::Flushable {
  mux::EventLoop& loop;
  std::vector<std::string>& order;
  std::string name;
  int flushes = 0;
  CountingWriter(mux::EventLoop& event_loop, std::vector<std::string>& log, std::string label)
      : loop(event_loop), order(log), name(std::move(label)) {}
  CountingWriter(const CountingWriter&) = delete;
  CountingWriter& operator=(const CountingWriter&) = delete;
  ~CountingWriter() { loop.cancel_flush(*this); }
  void send() {
    order.push_back("send " + name);
    loop.flush_at_batch_end(*this);
  }
  void on_batch_end() override {
    ++flushes;
    order.push_back("flush " + name);
  }
};

// A writer whose write takes 300 us (a busy wait, so a slow or loaded machine only makes it
// longer): a few dozen outlast the ~2 ms one turn of the loop writes.
struct SlowWriter final : mux::EventLoop::Flushable {
  mux::EventLoop& loop;
  std::vector<std::string>& order;
  std::string name;
  int flushes = 0;
  SlowWriter(mux::EventLoop& event_loop, std::vector<std::string>& log, std::string label)
      : loop(event_loop), order(log), name(std::move(label)) {}
  SlowWriter(const SlowWriter&) = delete;
  SlowWriter& operator=(const SlowWriter&) = delete;
  ~SlowWriter() { loop.cancel_flush(*this); }
  void on_batch_end() override {
    ++flushes;
    order.push_back(name);
    auto until = Clock::now() + 300us;
    while (Clock::now() < until) {
    }
  }
};

}  // namespace

TEST_CASE("EventLoop: a writer asked in several events of a batch is flushed once, at its end") {
  mux::EventLoop loop;
  mux::Fd first = readable_fd();
  mux::Fd second = readable_fd();
  std::vector<std::string> order;
  CountingWriter a(loop, order, "a");
  CountingWriter b(loop, order, "b");
  // Both events send to a (twice in the last one) and b once: what a test of the last event
  // writing at once would turn into three writes for a.
  loop.watch(first.get(), EPOLLIN, [&](std::uint32_t) { a.send(); });
  loop.watch(second.get(), EPOLLIN, [&](std::uint32_t) {
    a.send();
    b.send();
    a.send();
  });
  loop.add_timer(0ms, [&] { b.send(); });
  loop.run_once(1000ms);
  CHECK(a.flushes == 1);
  CHECK(b.flushes == 1);
  CHECK(order == std::vector<std::string>{"send a", "send a", "send b", "send a", "send b",
                                          "flush a", "flush b"});
  loop.unwatch(first.get());
  loop.unwatch(second.get());
  // Nothing asked: the next batch flushes nothing.
  loop.run_once(0ms);
  CHECK(a.flushes == 1);
}

TEST_CASE("EventLoop: the flush comes before deferred callbacks and again for what they send") {
  mux::EventLoop loop;
  mux::Fd fd = readable_fd();
  std::vector<std::string> order;
  CountingWriter a(loop, order, "a");
  CountingWriter b(loop, order, "b");
  loop.watch(fd.get(), EPOLLIN, [&](std::uint32_t) {
    a.send();
    // As a client leaving from a deferred call tells the room, which tells everyone.
    loop.defer([&] {
      order.emplace_back("deferred");
      a.send();
      b.send();
    });
  });
  loop.run_once(1000ms);
  CHECK(order == std::vector<std::string>{"send a", "flush a", "deferred", "send a", "send b",
                                          "flush a", "flush b"});
  loop.unwatch(fd.get());
}

TEST_CASE(
    "EventLoop: a cancelled or destroyed writer is not flushed; a pending flush never waits") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  std::vector<std::string> order;
  CountingWriter kept(loop, order, "kept");
  CountingWriter cancelled(loop, order, "cancelled");
  {
    CountingWriter gone(loop, order, "gone");
    gone.send();
  }
  cancelled.send();
  kept.send();
  loop.cancel_flush(cancelled);
  // Asked outside any batch, with no fd ready and no timer: run_once must not sleep its timeout.
  auto start = Clock::now();
  loop.run_once(5000ms);
  CHECK(Clock::now() - start < 2s);
  CHECK(kept.flushes == 1);
  CHECK(cancelled.flushes == 0);
  CHECK_FALSE(guard.fired);
}

TEST_CASE("EventLoop: a long flush goes on in the next turns, after a look at the fds") {
  mux::EventLoop loop;
  HangGuard guard(loop, 10s);
  std::vector<std::string> order;
  // 40 writers of 300 us each: 12 ms, several times the ~2 ms a turn writes before it looks at
  // its fds again.
  std::vector<std::unique_ptr<SlowWriter>> writers;
  for (int i = 0; i < 40; ++i) {
    writers.push_back(std::make_unique<SlowWriter>(loop, order, std::to_string(i)));
    loop.flush_at_batch_end(*writers.back());
  }
  loop.run_once(0ms);
  std::size_t first_turn = order.size();
  CHECK(first_turn >= 1);
  CHECK(first_turn < 40);
  CHECK(order.front() == "0");
  mux::Fd fd = readable_fd();
  int events = 0;
  loop.watch(fd.get(), EPOLLIN, [&](std::uint32_t) {
    ++events;
    order.push_back("event");
    // More output for a writer still listed (keeps its place) and for one already written
    // (listed again, at the end).
    loop.flush_at_batch_end(*writers[39]);
    loop.flush_at_batch_end(*writers[0]);
  });
  loop.run_once(5000ms);  // must not wait: writers are still listed
  CHECK(events == 1);
  // The event came before the rest of the writes, which went on where the first turn stopped.
  REQUIRE(order.size() > first_turn + 1);
  CHECK(order[first_turn] == "event");
  CHECK(order[first_turn + 1] == std::to_string(first_turn));
  loop.unwatch(fd.get());
  for (int turn = 0; turn < 100 && writers[0]->flushes < 2; ++turn)
    loop.run_once(0ms);
  // Each written once, writer 0 once more at the very end.
  for (int i = 1; i < 40; ++i)
    CHECK(writers[static_cast<std::size_t>(i)]->flushes == 1);
  CHECK(writers[0]->flushes == 2);
  CHECK(order.back() == "0");
  CHECK(order[order.size() - 2] == "39");
  CHECK_FALSE(guard.fired);
}

TEST_CASE("EventLoop: a loop that stops writes everything listed in its last turn") {
  mux::EventLoop loop;
  std::vector<std::string> order;
  std::vector<std::unique_ptr<SlowWriter>> writers;
  for (int i = 0; i < 20; ++i)
    writers.push_back(std::make_unique<SlowWriter>(loop, order, std::to_string(i)));
  // 6 ms of writes: a turn that was not the last would write only the first ones.
  loop.add_timer(0ms, [&] {
    for (auto& writer : writers)
      loop.flush_at_batch_end(*writer);
    loop.stop();
  });
  loop.run();
  for (auto& writer : writers)
    CHECK(writer->flushes == 1);
}

TEST_CASE("TimedPause: ends by itself; asked again it ends at the later end, once") {
  mux::EventLoop loop;
  int ended = 0;
  Clock::time_point ended_at{};
  mux::TimedPause pause(loop, [&] {
    ++ended;
    ended_at = Clock::now();
  });
  auto started = Clock::now();
  CHECK(pause.extend(50ms));         // started now: the owner stops reading
  CHECK_FALSE(pause.extend(150ms));  // already running: only its end moves
  CHECK_FALSE(pause.extend(10ms));   // an earlier end never shortens it
  CHECK(pause.active());
  auto deadline = started + 5s;
  while (ended == 0 && Clock::now() < deadline)
    loop.run_once(20ms);
  REQUIRE(ended == 1);
  CHECK_FALSE(pause.active());
  CHECK(ended_at - started >= 150ms);
  loop.run_once(60ms);
  CHECK(ended == 1);
}

TEST_CASE("TimedPause: cancel and destruction end it without the callback") {
  mux::EventLoop loop;
  int ended = 0;
  {
    mux::TimedPause gone(loop, [&] { ++ended; });
    gone.extend(10ms);
  }
  mux::TimedPause pause(loop, [&] { ++ended; });
  pause.extend(10ms);
  pause.cancel();
  CHECK_FALSE(pause.active());
  loop.run_once(50ms);
  loop.run_once(50ms);
  CHECK(ended == 0);
  CHECK(pause.extend(10ms));  // a cancelled pause starts afresh
}
