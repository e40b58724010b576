// Logger: the servers' log, one line per event on stdout (stdout carries nothing else for a
// server, and scripts read the `listening on` line there; under systemd both stdout and stderr
// go to the journal). Each line starts with an RFC 3339 UTC timestamp with its offset
// ("2026-11-29T15:58:00.123+00:00"), except when stdout is the journal (JOURNAL_STREAM names
// it): journald stamps lines itself, and gets a <N> syslog priority prefix instead.
// Levels: error, warning, info, debug (-q is error, -v is debug, --log-level picks any).
// The event loop only appends to a bounded in-memory queue; a background thread does the
// writing, so a stalled terminal or a full pipe on stdout never blocks the loop. If the queue
// overflows, lines are dropped and counted, and the count is logged once writing resumes, even
// when no other line follows (the writer wakes for the count alone; flush() and the destructor
// wait for it).
// Before fork() the queue is flushed (for a bounded time) so a fork-mode child's lines come
// after the parent's earlier lines about the same client; after fork() the child writes
// synchronously (it has no thread), which only ever blocks that one child.
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

// The least severe level written: quiet = errors only, warnings, normal = info, verbose = debug.
enum class Verbosity { quiet, warnings, normal, verbose };

class Logger {
 public:
  // `journal_stream`: JOURNAL_STREAM's value (nullptr: read the environment), for tests.
  explicit Logger(Verbosity verbosity, int fd = 1, const char* journal_stream = nullptr);
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;
  ~Logger();  // writes what is still queued, then joins the thread

  [[nodiscard]] Verbosity verbosity() const noexcept { return verbosity_; }

  // The `listening on` line: written at every level, as scripts and tests read the port there.
  template <typename... Args>
  void announce(fmt::format_string<Args...> format, Args&&... args) {
    write_line(Level::info, fmt::format(format, std::forward<Args>(args)...));
  }
  // Something failed that an operator must fix (disk full, out of fds); "error: " prefixed.
  template <typename... Args>
  void error(fmt::format_string<Args...> format, Args&&... args) {
    write_line(Level::error, fmt::format(format, std::forward<Args>(args)...));
  }
  // A limit tripped or a client misbehaved; "warning: " prefixed; silenced by -q.
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    if (verbosity_ >= Verbosity::warnings)
      write_line(Level::warning, fmt::format(format, std::forward<Args>(args)...));
  }
  // Normal events (start, joins, leaves, completed uploads); silenced by -q.
  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) {
    if (verbosity_ >= Verbosity::normal)
      write_line(Level::info, fmt::format(format, std::forward<Args>(args)...));
  }
  // Per-line or per-event detail; only with -v.
  template <typename... Args>
  void detail(fmt::format_string<Args...> format, Args&&... args) {
    if (verbosity_ == Verbosity::verbose)
      write_line(Level::debug, fmt::format(format, std::forward<Args>(args)...));
  }

  // True when lines go to the journal (no timestamps, <N> priority prefixes).
  [[nodiscard]] bool to_journal() const noexcept { return to_journal_; }

  // Blocks until everything queued so far, and the count of lines dropped, has been written.
  void flush();

  // fork() support: call before_fork() right before fork(), and after_fork_parent() or
  // after_fork_child() right after, so the child never inherits a mutex held by the thread.
  void before_fork();
  void after_fork_parent();
  void after_fork_child();

  static constexpr std::size_t kMaxQueuedBytes = 4 << 20;
  // How long before_fork() waits for the queue to drain (stdout may be stalled).
  static constexpr int kForkFlushMillis = 200;

 private:
  enum class Level { error, warning, info, debug };
  void write_line(Level level, std::string_view text);
  [[nodiscard]] std::string format_line(Level level, std::string_view text) const;
  void writer_thread();
  void write_all(std::string_view text) const;

  Verbosity verbosity_;
  int fd_;
  bool to_journal_ = false;
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

// "2026-11-23T07:30:00.123+00:00": UTC with milliseconds and the offset, as RFC 3339 writes it.
std::string log_timestamp();

// True when JOURNAL_STREAM ("DEV:INODE") names the file `fd` is open on.
bool is_journal_stream(int fd, const char* journal_stream);

}  // namespace mux
