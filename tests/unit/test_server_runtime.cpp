// ServerRuntime: the servers' skeleton. It blocks the server signals of the process that makes
// one, so each case runs in a child process of its own and reports through its exit status.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <functional>
#include <string>
#include <vector>

#include "core/service/server_runtime.hpp"

namespace {

// Runs `body` in a child with its stdout on /dev/null (the `listening on` line is printed even
// when quiet); returns the child's exit status, or -1 when it did not exit.
int in_child(const std::function<int()>& body) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) ::dup2(null, STDOUT_FILENO);
    ::alarm(30);  // a runtime that never stops ends here, and the case fails
    int code = 1;
    try {
      code = body();
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A service that records what the runtime asks of it.
struct RecordingService final : mux::ServerRuntime::Service {
  std::vector<std::string> calls;
  std::function<void()> on_start;
  std::function<void(bool again)> on_shut_down;

  void start() override {
    calls.emplace_back("start");
    if (on_start) on_start();
  }
  void shut_down(std::string_view signal_name, bool again) override {
    calls.push_back(std::string(again ? "again " : "shut down ") + std::string(signal_name));
    if (on_shut_down) on_shut_down(again);
  }
  void finish() override { calls.emplace_back("finish"); }
};

mux::CommonOptions quiet_on_any_port() {
  mux::CommonOptions common;
  common.port = 0;
  common.quiet = true;
  return common;
}

}  // namespace

TEST_CASE("ServerRuntime: signals reach the service once started; a second one says again") {
  int status = in_child([] {
    mux::CommonOptions common = quiet_on_any_port();
    mux::ServerAccessOptions access;
    mux::ServerRuntime runtime(common, access, mux::ServeMode::single);
    mux::Fd listener = runtime.take_listener();
    RecordingService service;
    // Blocked since the runtime was made, so they wait for the loop instead of killing us.
    service.on_start = [] { ::raise(SIGTERM); };
    service.on_shut_down = [&runtime](bool again) {
      if (again) return runtime.loop().stop();
      ::raise(SIGINT);
    };
    if (runtime.run(service) != 0) return 3;
    std::vector<std::string> expected{"start", "shut down SIGTERM", "again SIGINT", "finish"};
    return service.calls == expected ? 0 : 4;
  });
  CHECK(status == 0);
}

TEST_CASE("ServerRuntime: no TLS and no tokens unless asked; a bad token file stops the start") {
  int status = in_child([] {
    mux::CommonOptions common = quiet_on_any_port();
    mux::ServerAccessOptions access;
    mux::ServerRuntime runtime(common, access, mux::ServeMode::fork);
    if (runtime.tls() != nullptr || runtime.stream_factory() || runtime.throttle() != nullptr)
      return 3;
    if (runtime.tokens().required()) return 4;
    mux::ServerAccessOptions missing;
    missing.token_file = "/nonexistent/mux-tokens";
    try {
      mux::ServerRuntime refused(common, missing, mux::ServeMode::single);
      return 5;
    } catch (const std::exception&) {
      return 0;
    }
  });
  CHECK(status == 0);
}
