// Interrupted: thrown by a client that SIGINT or SIGTERM stopped before it was done. The message
// says how far it got; cli/ prints it as `mux: error: ...` and exits 128 + the signal's number
// (130, 143), as a shell reports a command its signal ended.
#pragma once

#include <csignal>
#include <stdexcept>
#include <string>

namespace mux {

class Interrupted : public std::runtime_error {
 public:
  Interrupted(int signo, const std::string& message) : std::runtime_error(message), signo_(signo) {}
  [[nodiscard]] int signo() const noexcept { return signo_; }
  [[nodiscard]] int exit_status() const noexcept { return 128 + signo_; }

 private:
  int signo_;
};

// "SIGINT", "SIGTERM", "SIGHUP"; "signal N" for others.
inline std::string signal_name(int signo) {
  switch (signo) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal " + std::to_string(signo);
  }
}

}  // namespace mux
