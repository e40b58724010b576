#include "core/service/hangup.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <csignal>
#include <exception>
#include <stdexcept>

#include "core/base/logger.hpp"
#include "core/service/service_manager.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

bool has_controlling_terminal() {
  // Once the terminal hangs up, the kernel detaches it from the session: opening /dev/tty fails.
  int fd = ::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

void block_server_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void reload_tls_on_hangup(Hangup& hangup, TlsServerContext& tls) {
  hangup.add_reload_hook("the TLS certificate", [&tls] {
    std::string failure = tls.reload();
    if (!failure.empty()) throw std::runtime_error(failure);
    return tls.describe_certificate();
  });
}

Hangup::Hangup(Logger& logger)
    : logger_(logger), started_with_terminal_(has_controlling_terminal()) {}

void Hangup::add_reload_hook(std::string what, std::function<std::string()> reload) {
  hooks_.push_back({std::move(what), std::move(reload)});
}

Hangup::Action Hangup::on_hangup() {
  if (started_with_terminal_ && !has_controlling_terminal()) {
    logger_.info("SIGHUP: the terminal went away");
    return Action::shut_down;
  }
  // Under systemd: `systemctl reload` waits from RELOADING=1 until READY=1, so it returns once
  // the hooks below have run, failed or not.
  notify_reloading();
  if (hooks_.empty()) logger_.info("SIGHUP: nothing to reload; still serving");
  for (const Hook& hook : hooks_) {
    try {
      std::string now_in_use = hook.reload();
      logger_.info("SIGHUP: reloaded {}{}{}", hook.what, now_in_use.empty() ? "" : ": ",
                   now_in_use);
    } catch (const std::exception& error) {
      // Never fatal: the server keeps serving with what it had.
      logger_.error("SIGHUP: could not reload {}: {}; still using the old one", hook.what,
                    error.what());
    }
  }
  notify_reloaded();
  return Action::reloaded;
}

}  // namespace mux
