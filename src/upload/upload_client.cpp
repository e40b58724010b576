#include "upload/upload_client.hpp"

#include <CLI/CLI.hpp>

#include <stdexcept>

namespace mux {

void setup_upload_client(CLI::App& app, UploadClientOptions& options) {
  CLI::App* sub =
      app.add_subcommand("upload-client", "Send a file and verify what the server received");
  sub->add_option("--file", options.file, "File to send; - reads stdin")
      ->required()
      ->type_name("PATH");
  add_common_flags(*sub, options.common);
  sub->add_option("--name", options.name,
                  "Name to store the upload under (default: the file's name)")
      ->type_name("NAME");
}

int run_upload_client(const UploadClientOptions& /*options*/) {
  throw std::runtime_error("upload-client is not implemented yet");
}

}  // namespace mux
