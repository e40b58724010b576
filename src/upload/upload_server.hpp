// `mux upload-server`: receives many uploads at once, verified with XXH3-128.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/access/access_options.hpp"
#include "core/service/common_options.hpp"
#include "upload/upload_store.hpp"

namespace mux {

struct UploadServerOptions {
  CommonOptions common;
  ServeMode serve = ServeMode::single;
  std::string output_dir;          // empty: count, hash and discard
  SyncMode sync = SyncMode::full;  // what OK promises about a saved upload
  std::uint64_t max_size = 0;      // 0: unlimited
  std::uint64_t max_clients = 0;   // 0: as many as RLIMIT_NOFILE allows once raised
  std::uint64_t min_free = 0;      // refuse uploads while the output filesystem has less; 0: off
  std::uint64_t max_per_address = 32;  // connections at once from one IP address; 0: no limit
  // From connecting to a complete header; 0: never.
  std::chrono::milliseconds header_timeout{10'000};
  // Without a byte before ERR timeout; 0: never.
  std::chrono::milliseconds idle_timeout{60'000};
  std::uint64_t min_rate = 16;  // bytes/s over 30 s below which an upload ends; 0: off
  ServerAccessOptions access;   // --tls-*, --token-file, --allow, --deny
  // --keep-partial: how long an interrupted resumable upload is kept for its uploader.
  std::chrono::milliseconds keep_partial{86'400'000};
};

int run_upload_server(const UploadServerOptions& options);

// --check: loads what run_upload_server() would (TLS certificate and key, token file) and proves
// --output-dir writable, without listening. Returns what was checked; throws as
// run_upload_server() would at start-up.
std::string check_upload_server(const UploadServerOptions& options);

}  // namespace mux
