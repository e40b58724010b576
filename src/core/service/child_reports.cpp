#include "core/service/child_reports.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <system_error>
#include <utility>

namespace mux {

ChildReports::ChildReports(EventLoop& loop) : loop_(loop) {
  int ends[2];
  // Non-blocking both ways: a child never waits on a full pipe, and the parent reads until
  // EAGAIN.
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0)
    throw std::system_error(errno, std::generic_category(), "pipe");
  read_end_ = Fd(ends[0]);
  write_end_ = Fd(ends[1]);
}

ChildReports::~ChildReports() {
  if (watching_) loop_.unwatch(read_end_.get());
}

void ChildReports::start(Handler on_report) {
  on_report_ = std::move(on_report);
  if (std::exchange(watching_, true)) return;
  loop_.watch(read_end_.get(), EPOLLIN, [this](std::uint32_t) { read_all(); });
}

void ChildReports::send(int write_fd) noexcept {
  pid_t self = ::getpid();
  // At most PIPE_BUF bytes: written whole or not at all.
  (void)!::write(write_fd, &self, sizeof self);
}

void ChildReports::read_all() {
  // Reports are written whole, so a read of a multiple of their size holds whole reports.
  std::array<pid_t, 256> pids{};
  for (;;) {
    ssize_t got = ::read(read_end_.get(), pids.data(), sizeof pids);
    if (got <= 0) return;  // EAGAIN: all read (the parent holds a write end: never EOF)
    for (std::size_t i = 0; i < static_cast<std::size_t>(got) / sizeof(pid_t); ++i) {
      if (on_report_) on_report_(pids[i]);
    }
  }
}

}  // namespace mux
