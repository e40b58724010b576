#include "upload/upload_server.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/hangup.hpp"
#include "core/logger.hpp"
#include "core/net.hpp"
#include "core/service_manager.hpp"
#include "upload/forking_server.hpp"
#include "upload/single_loop_server.hpp"
#include "upload/upload_store.hpp"

namespace mux {

std::string check_upload_server(const UploadServerOptions& options) {
  std::vector<std::string> checked;
  if (make_server_tls(options.access)) checked.emplace_back("TLS certificate and key");
  if (load_server_tokens(options.access).required()) checked.emplace_back("--token-file");
  if (!options.output_dir.empty()) {
    // Creates and removes a probe file: writable by this user, not merely present.
    OutputDirectory dir(options.output_dir, options.sync);
    checked.push_back(fmt::format("--output-dir {} (writable)", dir.path()));
  }
  return fmt::format("{}", fmt::join(checked, ", "));
}

int run_upload_server(const UploadServerOptions& options) {
  block_server_signals();
  ignore_sigpipe();
  // Past RLIMIT_FSIZE a write must fail that one upload with EFBIG, not kill the whole server.
  std::signal(SIGXFSZ, SIG_IGN);
  raise_fd_limit();
  std::optional<OutputDirectory> output_dir;
  if (!options.output_dir.empty()) {
    output_dir.emplace(options.output_dir, options.sync);
    output_dir->set_keep_partial(
        std::chrono::duration_cast<std::chrono::seconds>(options.keep_partial));
  }
  // Certificate errors stop the start before the port is taken.
  std::unique_ptr<TlsServerContext> tls = make_server_tls(options.access);
  bool socket_activated = false;
  Fd listener = take_listener(options.common.host, options.common.port, socket_activated);
  Logger logger(options.common.verbosity());
  // Printed even with -q: scripts and tests read the port here.
  logger.announce("listening on {} (serve {}{})", local_address(listener.get()),
                  to_string(options.serve), activation_note(socket_activated));
  for (const std::string& warning : exposure_warnings(
           options.access, listener.get(), socket_activated, options.common.address_given))
    logger.warn("{}", warning);
  if (options.sync == SyncMode::none && options.output_dir.empty())
    logger.warn("--sync none does nothing without --output-dir (uploads are not saved)");
  const OutputDirectory* dir = output_dir ? &*output_dir : nullptr;
  if (dir != nullptr) {
    // Left by a server (or a fork-mode child) that was killed before it could clean up.
    std::size_t stale = dir->remove_stale_partials();
    if (stale != 0) {
      logger.info("removed {} stale temporary file(s) from {}", stale, dir->path());
    }
    std::size_t expired = dir->remove_expired_resumables();
    if (expired != 0) {
      logger.info("removed {} partial upload(s) older than --keep-partial from {}", expired,
                  dir->path());
    }
  }
  UploadLimits limits{options.max_size, options.min_free, options.header_timeout,
                      options.idle_timeout, nullptr};
  limits.min_rate = options.min_rate;
  if (tls) {
    logger.info("TLS: {}{}", tls->describe_certificate(),
                options.access.tls.client_ca_file.empty() ? "" : ", client certificates required");
    limits.stream_factory = [context = tls.get()](int fd) -> std::unique_ptr<ByteStream> {
      return context->make_stream(fd);
    };
  }
  // The token table is shared with fork-mode children: they check tokens, the count is common.
  AccessTokens tokens = load_server_tokens(options.access);
  std::optional<FailureThrottle> throttle;
  if (tokens.required()) {
    throttle.emplace();
    limits.tokens = &tokens;
    limits.throttle = &*throttle;
    logger.info("--token-file: {} token(s); uploads need a token= header field", tokens.size());
  }
  UploadAdmission admission{options.max_clients, options.max_per_address,
                            make_address_check(options.access)};
  admission.refusal_stream = limits.stream_factory;  // TLS: refusals go out inside TLS
  Hangup hangup(logger);
  // Children already running keep the certificate they were forked with.
  if (tls) reload_tls_on_hangup(hangup, *tls);
  // The socket already queues connections; the loop takes them as soon as it runs.
  notify_ready(fmt::format("listening on {}", local_address(listener.get())));
  if (options.serve == ServeMode::fork) {
    ForkingServer(std::move(listener), logger, dir, limits, admission, hangup).run();
  } else {
    SingleLoopServer(std::move(listener), logger, dir, limits, admission, hangup).run();
  }
  logger.info("stopped");
  return 0;
}

}  // namespace mux
