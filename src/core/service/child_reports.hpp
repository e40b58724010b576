// ChildReports: a pipe on which fork-mode children tell their parent one fact each, by pid (the
// upload server's children say "my client's header is complete", so the parent stops counting
// that child as sheddable). The parent's loop reads the pipe; a child writes its own pid, one
// write of sizeof(pid_t) bytes, which a pipe keeps whole. Neither end ever blocks: a report
// that does not fit a full pipe is dropped, and the owner must treat a missing report as the
// safe default. Knows nothing of what a report means.
#pragma once

#include <sys/types.h>

#include <functional>

#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"

namespace mux {

class ChildReports {
 public:
  using Handler = std::function<void(pid_t child)>;

  explicit ChildReports(EventLoop& loop);  // throws std::system_error when the pipe fails
  ChildReports(const ChildReports&) = delete;
  ChildReports& operator=(const ChildReports&) = delete;
  ~ChildReports();

  // Starts reading; `on_report` runs in the parent's loop once per report.
  void start(Handler on_report);
  // The end children write to: kept open across fork (close-on-exec only).
  [[nodiscard]] int write_fd() const noexcept { return write_end_.get(); }
  // In a child: reports this process's pid on `write_fd`.
  static void send(int write_fd) noexcept;

 private:
  void read_all();

  EventLoop& loop_;
  Fd read_end_;
  Fd write_end_;
  Handler on_report_;
  bool watching_ = false;
};

}  // namespace mux
