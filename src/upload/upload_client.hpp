// `mux upload-client`: sends a file, shows progress, verifies what the server got.
#pragma once

#include <string>

#include "core/common_options.hpp"

namespace mux {

struct UploadClientOptions {
  CommonOptions common;
  std::string file;  // "-" reads stdin
  std::string name;  // empty: the file's basename
};

int run_upload_client(const UploadClientOptions& options);

}  // namespace mux
