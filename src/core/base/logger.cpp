#include "core/base/logger.hpp"

#include "core/base/threads.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <utility>

namespace mux {

std::string log_timestamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03}+00:00", text, millis);
}

bool is_journal_stream(int fd, const char* journal_stream) {
  if (journal_stream == nullptr || *journal_stream == '\0') return false;
  unsigned long long device = 0;
  unsigned long long inode = 0;
  char tail = 0;
  if (std::sscanf(journal_stream, "%llu:%llu%c", &device, &inode, &tail) != 2) return false;
  struct stat status {};
  if (::fstat(fd, &status) != 0) return false;
  return static_cast<unsigned long long>(status.st_dev) == device &&
         static_cast<unsigned long long>(status.st_ino) == inode;
}

Logger::Logger(Verbosity verbosity, int fd, const char* journal_stream)
    : verbosity_(verbosity), fd_(fd) {
  to_journal_ = is_journal_stream(
      fd_, journal_stream != nullptr ? journal_stream : std::getenv("JOURNAL_STREAM"));
  thread_ = start_thread_without_signals([this] { writer_thread(); });
}

std::string Logger::format_line(Level level, std::string_view text) const {
  static constexpr const char* kTags[] = {"error: ", "warning: ", "", ""};
  // syslog priorities journald reads from a line's start: err, warning, info, debug.
  static constexpr int kPriorities[] = {3, 4, 6, 7};
  auto index = static_cast<std::size_t>(level);
  if (to_journal_) return fmt::format("<{}>{}{}\n", kPriorities[index], kTags[index], text);
  return fmt::format("{} {}{}\n", log_timestamp(), kTags[index], text);
}

Logger::~Logger() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Logger::write_all(std::string_view text) const {
  while (!text.empty()) {
    ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // stdout is gone (closed pipe): the log is lost, the server goes on
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

void Logger::write_line(Level level, std::string_view text) {
  std::string line = format_line(level, text);
  if (synchronous_ || !thread_.joinable()) {
    write_all(line);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    if (queued_bytes_ + line.size() > kMaxQueuedBytes) {
      // The first drop wakes the writer too: the count must come out even if nothing else is
      // ever logged (an oversized line into an empty queue, or the last lines before exit).
      if (dropped_++ != 0) return;
    } else {
      queued_bytes_ += line.size();
      queue_.push_back(std::move(line));
    }
  }
  wake_.notify_one();
}

void Logger::writer_thread() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty() || dropped_ != 0; });
    if (queue_.empty() && dropped_ == 0 && stopping_) return;
    // Every allocation and free of this thread happens while it holds the mutex, which
    // before_fork() takes: a fork never snapshots this thread inside the allocator. glibc's malloc
    // has its own fork handlers, but the sanitizers' allocators in g++ 12 do not, and a child
    // forked mid-malloc deadlocked there on its first allocation.
    std::string joined;
    for (const std::string& line : queue_)
      joined += line;
    queue_.clear();
    queued_bytes_ = 0;
    if (std::size_t dropped = std::exchange(dropped_, 0); dropped > 0) {
      joined += format_line(
          Level::warning, fmt::format("{} log lines dropped: stdout was not keeping up", dropped));
    }
    writing_ = true;
    lock.unlock();
    write_all(joined);  // only write(2): a stalled stdout never holds the mutex
    lock.lock();
    writing_ = false;
    idle_.notify_all();
  }  // `joined` is freed here, under the mutex
}

void Logger::flush() {
  if (!thread_.joinable() || synchronous_) return;
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return queue_.empty() && dropped_ == 0 && !writing_; });
}

void Logger::before_fork() {
  if (!thread_.joinable() || synchronous_) return;
  std::unique_lock lock(mutex_);
  // The parent's lines about this client (its connection) go out before the child's own.
  idle_.wait_for(lock, std::chrono::milliseconds(kForkFlushMillis),
                 [this] { return queue_.empty() && dropped_ == 0 && !writing_; });
  lock.release();  // stays locked across fork(); after_fork_* unlock it
}

void Logger::after_fork_parent() {
  if (thread_.joinable() && !synchronous_) mutex_.unlock();
}

void Logger::after_fork_child() {
  if (!thread_.joinable() || synchronous_) return;
  // The thread does not exist here. Lines queued by the parent are the parent's to write; they
  // are left where they are, never read again: freeing them would write to every heap page they
  // sit on, and each such page would become a private copy in every child (a parent that logged
  // a burst of connections just before forking made its children 2-3 times larger).
  synchronous_ = true;
  mutex_.unlock();
  // thread_ still names the parent's thread; the child leaves through _exit() and never runs
  // this Logger's destructor, so it is never joined here.
}

}  // namespace mux
