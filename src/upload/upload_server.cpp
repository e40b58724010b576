#include "upload/upload_server.hpp"

#include <CLI/CLI.hpp>

#include <stdexcept>

namespace mux {

void setup_upload_server(CLI::App& app, UploadServerOptions& options) {
  CLI::App* sub = app.add_subcommand("upload-server", "Receive uploads: one event loop, or a process per client");
  add_common_flags(*sub, options.common);
  add_serve_flag(*sub, options.serve);
  sub->add_option("--output-dir", options.output_dir,
                  "Save uploads in DIR (default: count, hash and discard)")
      ->type_name("DIR");
  add_size_flag(*sub, "--max-size", options.max_size, "Largest upload accepted (default: unlimited)", 1);
  sub->add_option("--max-clients", options.max_clients,
                  "Most uploads at once (default: what the fd limit allows)")
      ->type_name("N")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
}

int run_upload_server(const UploadServerOptions& /*options*/) {
  throw std::runtime_error("upload-server is not implemented yet");
}

}  // namespace mux
