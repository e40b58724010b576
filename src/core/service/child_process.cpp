#include "core/service/child_process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <system_error>
#include <vector>

#include "core/base/logger.hpp"
#include "core/service/service_manager.hpp"

namespace mux {
namespace {

void close_all_except(std::vector<int> keep) {
  keep.push_back(0);
  keep.push_back(1);
  keep.push_back(2);
  std::sort(keep.begin(), keep.end());
  unsigned int next = 0;
  for (int fd : keep) {
    if (fd < 0 || static_cast<unsigned int>(fd) < next) continue;
    if (static_cast<unsigned int>(fd) > next)
      ::close_range(next, static_cast<unsigned int>(fd) - 1, 0);
    next = static_cast<unsigned int>(fd) + 1;
  }
  ::close_range(next, ~0U, 0);
}

}  // namespace

pid_t fork_child(std::initializer_list<int> keep, Logger* logger,
                 const std::function<int()>& body) {
  // Anything buffered in stdio would otherwise be written twice, once by each process.
  std::fflush(stdout);
  std::fflush(stderr);
  if (logger) logger->before_fork();
  pid_t pid = ::fork();
  if (pid != 0) {
    if (logger) logger->after_fork_parent();
    if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
    return pid;
  }
  if (logger) logger->after_fork_child();
  close_all_except(std::vector<int>(keep));
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGCHLD, SIG_DFL);
  // A hangup reaches the whole process group; what it means is the parent's to decide (it
  // reloads, or shuts down and ends its children in an orderly way).
  ::signal(SIGHUP, SIG_IGN);
  // Only the parent speaks for the service (READY, STOPPING); the listener it got is closed here.
  forget_service_manager();
  int status = 1;
  try {
    status = body();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "mux: error: %s\n", error.what());
  }
  std::fflush(stdout);
  std::fflush(stderr);
  ::_exit(status);
}

void reap_children(const std::function<void(pid_t, int)>& on_exit) {
  while (true) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      if (pid < 0 && errno == EINTR) continue;
      return;  // 0: children remain but none has exited; ECHILD: none at all
    }
    on_exit(pid, status);
  }
}

}  // namespace mux
