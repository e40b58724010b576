// ChildSupervisor: the children of one fork-mode server (chat-server and upload-server --serve
// fork). Spawns them (fork_child), reaps them on SIGCHLD with waitpid(-1, WNOHANG), runs each
// child's cleanup when it has ended (whatever ended it: its own exit, kill -9, the OOM killer or
// our own SIGKILL at shutdown), terminates them all with a grace period and then SIGKILL, and
// never leaves one unreaped. It also holds each child's AdmissionTicket until the child is reaped,
// so a client costs its admission slot for as long as its process exists.
// Owned by the server, declared after everything the cleanups use; it registers SIGCHLD on the
// loop itself, before the first fork, so no child can exit unnoticed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <string>
#include <unordered_map>

#include "core/loop/admission.hpp"
#include "core/loop/event_loop.hpp"

namespace mux {

class Logger;

class ChildSupervisor {
 public:
  // Runs in the parent once the child is reaped; `status` is the wait status.
  using OnExit = std::function<void(pid_t pid, int status)>;

  // `max_children` 0 means default_max_children(kDefaultBytesPerChild).
  ChildSupervisor(EventLoop& loop, Logger& logger, std::size_t max_children);
  ChildSupervisor(const ChildSupervisor&) = delete;
  ChildSupervisor& operator=(const ChildSupervisor&) = delete;
  // Kills and reaps any child still running (running its cleanup).
  ~ChildSupervisor();

  // Forks a child that runs `body` with only `keep` (and 0, 1, 2) open; see fork_child. Throws
  // std::system_error when fork fails. The caller checks has_room() first.
  pid_t spawn(std::initializer_list<int> keep, const std::function<int()>& body,
              OnExit on_exit = {}, AdmissionTicket ticket = {});

  // The ticket a running (not yet reaped) child holds; null when there is no such child.
  [[nodiscard]] AdmissionTicket* ticket_of(pid_t pid) noexcept {
    auto it = children_.find(pid);
    return it == children_.end() ? nullptr : &it->second.ticket;
  }

  [[nodiscard]] bool has_room() const noexcept { return children_.size() < max_children_; }
  [[nodiscard]] std::size_t count() const noexcept { return children_.size(); }
  [[nodiscard]] std::size_t max_children() const noexcept { return max_children_; }

  // Called after every reaping pass that reaped at least one child (resume accepting, stop the
  // loop once the last child of a shutdown is gone).
  void on_reaped(std::function<void()> callback) { on_reaped_ = std::move(callback); }

  // Shutdown: sends `signo` to every child now (0 sends nothing: they were told another way),
  // and SIGKILL to any still running after `grace`.
  void terminate_all(int signo, std::chrono::milliseconds grace);
  // After the loop has stopped: waits up to `grace` for the children to exit, then kills the rest
  // and reaps them. Blocks.
  void wait_all(std::chrono::milliseconds grace);

  // Reaps whatever has exited (the SIGCHLD handler; public for wait loops and tests).
  void reap();

  // "exit status 3", "killed by signal 9 (Killed)".
  static std::string describe_exit(int status);

  // The cap on children when none is given: what the machine can hold. The smallest of half the
  // available memory divided by `bytes_per_child`, half of RLIMIT_NPROC, and a quarter of
  // kernel.pid_max and kernel.threads-max; at least kMinChildren.
  static std::size_t default_max_children(std::size_t bytes_per_child);
  static constexpr std::size_t kMinChildren = 16;
  // A chat child idles at ~130 KiB of its own (USS) over TCP, ~410 KiB over TLS (measured by
  // bench/fork_child_memory), and touches more when busy (its read buffer, a queue).
  static constexpr std::size_t kDefaultBytesPerChild = 1 << 20;

 private:
  struct Child {
    OnExit on_exit;
    AdmissionTicket ticket;
  };

  void kill_all(int signo);

  EventLoop& loop_;
  Logger& logger_;
  std::size_t max_children_;
  std::unordered_map<pid_t, Child> children_;
  std::function<void()> on_reaped_;
  EventLoop::TimerId kill_timer_ = 0;
};

}  // namespace mux
