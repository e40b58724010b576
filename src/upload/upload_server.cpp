#include "upload/upload_server.hpp"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <optional>

#include "core/logger.hpp"
#include "core/net.hpp"
#include "upload/forking_server.hpp"
#include "upload/single_loop_server.hpp"
#include "upload/upload_store.hpp"

namespace mux {

void setup_upload_server(CLI::App& app, UploadServerOptions& options) {
  CLI::App* sub = app.add_subcommand("upload-server",
                                     "Receive uploads: one event loop, or a process per client");
  add_common_flags(*sub, options.common);
  add_serve_flag(*sub, options.serve);
  sub->add_option("--output-dir", options.output_dir,
                  "Save uploads in DIR (default: count, hash and discard)")
      ->type_name("DIR");
  add_size_flag(*sub, "--max-size", options.max_size,
                "Largest upload accepted (default: unlimited)", 1);
  add_count_flag(*sub, "--max-clients", options.max_clients,
                 "Most uploads at once (default: what the fd limit allows)", 1, 10'000'000);
}

int run_upload_server(const UploadServerOptions& options) {
  ignore_sigpipe();
  // Past RLIMIT_FSIZE a write must fail that one upload with EFBIG, not kill the whole server.
  std::signal(SIGXFSZ, SIG_IGN);
  raise_fd_limit();
  std::optional<OutputDirectory> output_dir;
  if (!options.output_dir.empty()) output_dir.emplace(options.output_dir);
  Fd listener = listen_tcp(options.common.host, options.common.port);
  // Printed even with -q, and before the logger starts: scripts and tests read the port here.
  fmt::print("{} listening on {} (serve {})\n", log_timestamp(), local_address(listener.get()),
             to_string(options.serve));
  std::fflush(stdout);
  Logger logger(options.common.verbosity());
  const OutputDirectory* dir = output_dir ? &*output_dir : nullptr;
  if (options.serve == ServeMode::fork) {
    ForkingServer(std::move(listener), logger, dir, options.max_size, options.max_clients).run();
  } else {
    SingleLoopServer(std::move(listener), logger, dir, options.max_size, options.max_clients).run();
  }
  logger.info("stopped");
  return 0;
}

}  // namespace mux
