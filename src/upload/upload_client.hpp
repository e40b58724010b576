// `mux upload-client`: sends a file, shows progress, verifies what the server got.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/service/client_link.hpp"
#include "core/service/common_options.hpp"

namespace mux {

struct UploadClientOptions {
  CommonOptions common;
  ClientLinkOptions link;  // connect timeout, TLS, token
  std::string file;        // "-" reads stdin; the first --file
  // Every --file, in order: more than one, or a directory, sends them all over one connection
  // (a batch: upload/batch_sender.hpp).
  std::vector<std::string> files;
  std::string name;  // empty: the file's basename
  // Without progress (sending, or awaiting the reply); 0: never.
  std::chrono::milliseconds timeout{30'000};
  bool no_resume = false;        // --no-resume: replace what the server kept of an earlier try
  std::uint64_t limit_rate = 0;  // --limit-rate: bytes per second at most; 0: unlimited
  std::uint64_t retry = 0;       // --retry: new tries after a lost connection; 0: none
};

int run_upload_client(const UploadClientOptions& options);

// --check: opens --file (unless it is stdin) and loads the --tls-* and --token-file files,
// without connecting. Returns what was checked; throws as run_upload_client() would.
std::string check_upload_client(const UploadClientOptions& options);

}  // namespace mux
