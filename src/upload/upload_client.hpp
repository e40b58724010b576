// `mux upload-client`: sends a file, shows progress, verifies what the server got.
#pragma once

#include <string>

#include "cli/common_options.hpp"

namespace CLI {
class App;
}

namespace mux {

struct UploadClientOptions {
  CommonOptions common;
  std::string file;  // "-" reads stdin
  std::string name;  // empty: the file's basename
};

void setup_upload_client(CLI::App& app, UploadClientOptions& options);
int run_upload_client(const UploadClientOptions& options);

}  // namespace mux
