// Logger: the servers' timestamped log on stdout. The event loop only appends to a bounded
// in-memory queue; a background thread does the writing, so a stalled terminal or a full pipe on
// stdout never blocks the loop. If the queue overflows, lines are dropped and counted, and the
// count is logged once writing resumes. After fork() the child writes synchronously (it has no
// thread), which only ever blocks that one child.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

namespace mux {

enum class Verbosity { quiet, normal, verbose };

class Logger {
 public:
  explicit Logger(Verbosity verbosity, int fd = 1);
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;
  ~Logger();  // writes what is still queued, then joins the thread

  [[nodiscard]] Verbosity verbosity() const noexcept { return verbosity_; }

  // Normal events (start, joins, leaves, completed uploads); silenced by -q.
  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    if (verbosity_ != Verbosity::quiet)
      write_line(fmt::format(format, std::forward<Args>(args)...));
  }
  // Per-line or per-event detail; only with -v.
  template <typename... Args>
  void detail(fmt::format_string<Args...> format, Args&&... args) {
    if (verbosity_ == Verbosity::verbose)
      write_line(fmt::format(format, std::forward<Args>(args)...));
  }

  // Blocks until everything queued so far has been written.
  void flush();

  // fork() support: call before_fork() right before fork(), and after_fork_parent() or
  // after_fork_child() right after, so the child never inherits a mutex held by the thread.
  void before_fork();
  void after_fork_parent();
  void after_fork_child();

  static constexpr std::size_t kMaxQueuedBytes = 4 << 20;

 private:
  void write_line(std::string_view text);
  void writer_thread();
  void write_all(std::string_view text) const;

  Verbosity verbosity_;
  int fd_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t dropped_ = 0;
  bool writing_ = false;
  bool stopping_ = false;
  bool synchronous_ = false;
  std::thread thread_;
};

// "2026-11-23 07:30:00.123": local time with milliseconds.
std::string log_timestamp();

}  // namespace mux
