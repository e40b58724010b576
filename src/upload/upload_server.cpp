#include "upload/upload_server.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/logger.hpp"
#include "core/loop/net.hpp"
#include "core/service/server_runtime.hpp"
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
  // Past RLIMIT_FSIZE a write must fail that one upload with EFBIG, not kill the whole server.
  std::signal(SIGXFSZ, SIG_IGN);
  std::optional<OutputDirectory> output_dir;
  if (!options.output_dir.empty()) {
    output_dir.emplace(options.output_dir, options.sync);
    output_dir->set_keep_partial(
        std::chrono::duration_cast<std::chrono::seconds>(options.keep_partial));
  }
  // Certificate and token files are loaded here, before the port is taken.
  ServerRuntime runtime(options.common, options.access, options.serve);
  Logger& logger = runtime.logger();
  Fd listener = runtime.take_listener();
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
  limits.stream_factory = runtime.stream_factory();
  // The token table is shared with fork-mode children: they check tokens, the count is common.
  if (runtime.tokens().required()) {
    limits.tokens = &runtime.tokens();
    limits.throttle = runtime.throttle();
  }
  runtime.describe_access("uploads need a token= header field");
  UploadAdmission admission{options.max_clients, options.max_per_address, runtime.address_check()};
  admission.refusal_stream = limits.stream_factory;  // TLS: refusals go out inside TLS
  admission.shed_after = pre_header_shed_after(options.header_timeout);
  if (options.serve == ServeMode::fork) {
    ForkingServer server(runtime.loop(), std::move(listener), logger, dir, limits, admission);
    return runtime.run(server);
  }
  SingleLoopServer server(runtime.loop(), std::move(listener), logger, dir, limits, admission);
  return runtime.run(server);
}

}  // namespace mux
