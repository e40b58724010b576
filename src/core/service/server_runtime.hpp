// ServerRuntime: the skeleton every mux server stands on, so that chat-server and upload-server
// supply only what is their own (their limits, their sessions, what shutting down means to them).
// It owns, in start-up order:
// - the process set-up: SIGINT/SIGTERM/SIGHUP blocked until the loop watches them, SIGPIPE
//   ignored, RLIMIT_NOFILE raised;
// - the log, the event loop and what SIGHUP means (Hangup);
// - the TLS context (re-read on SIGHUP), the --token-file tokens and their failure throttle
//   (shared with fork-mode children), each loaded before the port is taken so that a bad file
//   stops the start with the port still free;
// - the listening socket (socket activation or --host/--port), the `listening on` line, the
//   exposure warnings, READY=1, and STOPPING=1 when a shutdown begins.
// The server is a Service: start() once the signals are wired, shut_down() for SIGINT, SIGTERM
// or a SIGHUP whose terminal is gone, finish() once the loop has stopped.
#pragma once

#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/access/access_options.hpp"
#include "core/access/access_tokens.hpp"
#include "core/base/logger.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/service/common_options.hpp"
#include "core/service/hangup.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

class ServerRuntime {
 public:
  class Service {
   public:
    // The signals are wired and the listening line is out: start accepting (and whatever else
    // runs beside, e.g. a Redis link). READY=1 follows.
    virtual void start() = 0;
    // SIGINT, SIGTERM, or SIGHUP from a terminal that went away (`signal_name` says which).
    // `again` for every signal after the first: the service decides whether that cuts the
    // graceful shutdown short. STOPPING=1 has been sent before the first call.
    virtual void shut_down(std::string_view signal_name, bool again) = 0;
    // The loop has stopped: release what must go before "stopped" is logged.
    virtual void finish() {}

   protected:
    ~Service() = default;
  };

  // Blocks the server signals, ignores SIGPIPE, raises the fd limit, opens the log, loads the
  // TLS context and the tokens (throws what make_server_tls / load_server_tokens throw).
  ServerRuntime(const CommonOptions& common, const ServerAccessOptions& access, ServeMode serve);
  ServerRuntime(const ServerRuntime&) = delete;
  ServerRuntime& operator=(const ServerRuntime&) = delete;
  ~ServerRuntime();

  [[nodiscard]] EventLoop& loop() noexcept { return loop_; }
  [[nodiscard]] Logger& logger() noexcept { return logger_; }
  [[nodiscard]] ServeMode serve() const noexcept { return serve_; }
  // Null without --tls / --tls-cert.
  [[nodiscard]] TlsServerContext* tls() const noexcept { return tls_.get(); }
  // Makes a TLS server stream per connection; null for plain TCP.
  [[nodiscard]] StreamFactory stream_factory() const;
  [[nodiscard]] const AccessTokens& tokens() const noexcept { return tokens_; }
  // With --token-file only: slows down whoever keeps guessing; shared with fork-mode children.
  [[nodiscard]] FailureThrottle* throttle() noexcept { return throttle_ ? &*throttle_ : nullptr; }
  // Runs `reload` on SIGHUP (see Hangup::add_reload_hook); the TLS certificate is registered.
  [[nodiscard]] Hangup& hangup() noexcept { return hangup_; }

  // The listening socket (systemd's, or bound to --host/--port), announced at once with
  // `listening on ADDRESS (serve MODE...)` and the exposure warnings. Call once, before run().
  Fd take_listener();
  // --allow / --deny as the admission hook; null when neither was given.
  [[nodiscard]] std::function<bool(const sockaddr*, socklen_t)> address_check() const {
    return make_address_check(access_);
  }
  // Logs the TLS certificate, the number of tokens (`token_hint` says what a client sends) and
  // the --allow / --deny ranges.
  void describe_access(std::string_view token_hint);

  // Wires the signals, starts the service, tells systemd READY=1 and runs the loop until the
  // service stops it; then finish() and "stopped". Returns the exit status (0).
  int run(Service& service);

 private:
  // First of the members: the signal mask must be set before any thread (the log's) starts.
  struct ProcessSetup {
    ProcessSetup();
  };

  void on_stop_signal(int signo);

  ProcessSetup process_setup_;
  const CommonOptions& common_;
  const ServerAccessOptions& access_;
  ServeMode serve_;
  Logger logger_;
  EventLoop loop_;
  Hangup hangup_;
  std::unique_ptr<TlsServerContext> tls_;
  AccessTokens tokens_;
  std::optional<FailureThrottle> throttle_;
  std::string listening_on_;  // the listener's address, once taken
  Service* service_ = nullptr;
  bool stopping_ = false;
};

}  // namespace mux
