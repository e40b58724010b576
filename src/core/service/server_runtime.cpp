#include "core/service/server_runtime.hpp"

#include <fmt/format.h>

#include "core/loop/net.hpp"
#include "core/service/service_manager.hpp"

namespace mux {
namespace {

const char* signal_name(int signo) {
  if (signo == SIGHUP) return "SIGHUP";
  return signo == SIGINT ? "SIGINT" : "SIGTERM";
}

}  // namespace

ServerRuntime::ProcessSetup::ProcessSetup() {
  block_server_signals();
  ignore_sigpipe();
  raise_fd_limit();
}

ServerRuntime::ServerRuntime(const CommonOptions& common, const ServerAccessOptions& access,
                             ServeMode serve)
    : common_(common),
      access_(access),
      serve_(serve),
      logger_(common.verbosity()),
      hangup_(logger_),
      tls_(make_server_tls(access)),
      tokens_(load_server_tokens(access)) {
  // Connections already open (and fork-mode children already running) keep the certificate they
  // started with.
  if (tls_) reload_tls_on_hangup(hangup_, *tls_);
  if (tokens_.required()) throttle_.emplace();
}

ServerRuntime::~ServerRuntime() = default;

StreamFactory ServerRuntime::stream_factory() const {
  if (!tls_) return nullptr;
  return [tls = tls_.get()](int fd) -> std::unique_ptr<ByteStream> { return tls->make_stream(fd); };
}

Fd ServerRuntime::take_listener() {
  bool activated = false;
  Fd listener = mux::take_listener(common_.host, common_.port, activated);
  listening_on_ = local_address(listener.get());
  // Printed even with -q: scripts and tests read the port here.
  logger_.announce("listening on {} (serve {}{})", listening_on_, to_string(serve_),
                   activation_note(activated));
  for (const std::string& warning :
       exposure_warnings(access_, listener.get(), activated, common_.address_given))
    logger_.warn("{}", warning);
  return listener;
}

void ServerRuntime::describe_access(std::string_view token_hint) {
  if (tls_) {
    logger_.info("TLS: {}{}", tls_->describe_certificate(),
                 access_.tls.client_ca_file.empty() ? "" : ", client certificates required");
  }
  if (tokens_.required()) logger_.info("--token-file: {} token(s); {}", tokens_.size(), token_hint);
  if (!access_.addresses.empty()) logger_.info("addresses: {}", access_.addresses.describe());
}

int ServerRuntime::run(Service& service) {
  service_ = &service;
  loop_.on_signal(SIGINT, [this] { on_stop_signal(SIGINT); });
  loop_.on_signal(SIGTERM, [this] { on_stop_signal(SIGTERM); });
  loop_.on_signal(SIGHUP, [this] {
    if (hangup_.on_hangup() == Hangup::Action::shut_down) on_stop_signal(SIGHUP);
  });
  service.start();
  notify_ready(fmt::format("listening on {}", listening_on_));
  loop_.run();
  service.finish();
  service_ = nullptr;
  logger_.info("stopped");
  return 0;
}

void ServerRuntime::on_stop_signal(int signo) {
  bool again = stopping_;
  if (!again) {
    stopping_ = true;
    notify_stopping(fmt::format("shutting down ({})", signal_name(signo)));
  }
  service_->shut_down(signal_name(signo), again);
}

}  // namespace mux
