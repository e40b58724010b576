#include "core/service/child_supervisor.hpp"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "core/base/logger.hpp"
#include "core/service/child_process.hpp"

namespace mux {
namespace {

// A number from a /proc file such as /proc/sys/kernel/pid_max; 0 when unreadable.
std::uint64_t read_proc_number(const char* path) {
  std::ifstream file(path);
  std::uint64_t value = 0;
  file >> value;
  return file ? value : 0;
}

// MemAvailable from /proc/meminfo, in bytes; 0 when unknown.
std::uint64_t available_memory() {
  std::ifstream file("/proc/meminfo");
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (file >> key >> kib) {
    std::getline(file, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

}  // namespace

ChildSupervisor::ChildSupervisor(EventLoop& loop, Logger& logger, std::size_t max_children)
    : loop_(loop),
      logger_(logger),
      max_children_(max_children != 0 ? max_children
                                      : default_max_children(kDefaultBytesPerChild)) {
  loop_.on_signal(SIGCHLD, [this] { reap(); });
}

ChildSupervisor::~ChildSupervisor() {
  loop_.cancel_timer(kill_timer_);
  if (!children_.empty()) wait_all(std::chrono::milliseconds{0});
}

pid_t ChildSupervisor::spawn(std::initializer_list<int> keep, const std::function<int()>& body,
                             OnExit on_exit, AdmissionTicket ticket) {
  pid_t pid = fork_child(keep, &logger_, body);
  children_.emplace(pid, Child{std::move(on_exit), std::move(ticket)});
  return pid;
}

void ChildSupervisor::reap() {
  bool reaped = false;
  reap_children([this, &reaped](pid_t pid, int status) {
    auto it = children_.find(pid);
    if (it == children_.end()) return;  // not ours (a helper's child): nothing to clean
    Child child = std::move(it->second);
    children_.erase(it);
    reaped = true;
    if (child.on_exit) child.on_exit(pid, status);
    // child.ticket is released here: the slot frees only now that the process is gone.
  });
  if (children_.empty()) loop_.cancel_timer(std::exchange(kill_timer_, 0));
  if (reaped && on_reaped_) on_reaped_();
}

void ChildSupervisor::kill_all(int signo) {
  for (const auto& entry : children_)
    ::kill(entry.first, signo);
}

void ChildSupervisor::terminate_all(int signo, std::chrono::milliseconds grace) {
  if (signo != 0) kill_all(signo);
  if (children_.empty() || kill_timer_ != 0) return;
  kill_timer_ = loop_.add_timer(grace, [this, grace] {
    kill_timer_ = 0;
    if (children_.empty()) return;
    logger_.info("{} process(es) still running after {} ms: killing them", children_.size(),
                 grace.count());
    kill_all(SIGKILL);
  });
}

void ChildSupervisor::wait_all(std::chrono::milliseconds grace) {
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (!children_.empty() && std::chrono::steady_clock::now() < deadline) {
    reap();
    if (!children_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (children_.empty()) return;
  kill_all(SIGKILL);
  // Blocking waits, one per child: SIGKILL cannot be ignored, so each returns promptly.
  std::vector<pid_t> remaining;
  remaining.reserve(children_.size());
  for (const auto& entry : children_)
    remaining.push_back(entry.first);
  for (pid_t pid : remaining) {
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid, &status, 0);
    } while (got < 0 && errno == EINTR);
    auto it = children_.find(pid);
    if (it == children_.end()) continue;
    Child child = std::move(it->second);
    children_.erase(it);
    if (child.on_exit && got == pid) child.on_exit(pid, status);
  }
}

std::string ChildSupervisor::describe_exit(int status) {
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return fmt::format("exit status {}", WEXITSTATUS(status));
}

std::size_t ChildSupervisor::default_max_children(std::size_t bytes_per_child) {
  std::uint64_t cap = std::uint64_t{1} << 20;
  if (std::uint64_t memory = available_memory(); memory != 0 && bytes_per_child != 0)
    cap = std::min(cap, memory / 2 / bytes_per_child);
  rlimit processes{};
  if (::getrlimit(RLIMIT_NPROC, &processes) == 0 && processes.rlim_cur != RLIM_INFINITY)
    cap = std::min<std::uint64_t>(cap, processes.rlim_cur / 2);
  if (std::uint64_t pid_max = read_proc_number("/proc/sys/kernel/pid_max"); pid_max != 0)
    cap = std::min(cap, pid_max / 4);
  if (std::uint64_t threads = read_proc_number("/proc/sys/kernel/threads-max"); threads != 0)
    cap = std::min(cap, threads / 4);
  return static_cast<std::size_t>(std::max<std::uint64_t>(cap, kMinChildren));
}

}  // namespace mux
