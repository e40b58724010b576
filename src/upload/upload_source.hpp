// UploadSource: the bytes upload-client sends, as a file it can pread(2) from, with a size known
// before the first byte goes out (the MUXUP/1 header needs it). Opened by run_upload_client()
// before connecting, so a bad path fails without touching the network.
//
// Standard input, a pipe or any other file that is not a regular file is first copied to an
// unnamed temporary file (O_TMPFILE in $TMPDIR, else /tmp): MUXUP/1 has no "size unknown", and a
// raw upload would lose the --name. The copy never outlives the process.
#pragma once

#include <cstdint>
#include <string>

#include "core/fd.hpp"

namespace mux {

struct UploadSource {
  Fd file;
  std::uint64_t offset = 0;  // where the bytes start (stdin may have been read from already)
  std::uint64_t size = 0;
  std::string default_name;  // the base name of the path; "stdin" for -
};

// Throws std::runtime_error "<path>: <reason>" (missing, unreadable, a directory...).
UploadSource open_upload_source(const std::string& path);

}  // namespace mux
