// UploadSource: the bytes upload-client sends. Opened by run_upload_client() before connecting, so
// a bad path fails without touching the network.
//
// A regular file (standard input included, when it is one) has a size known before the first byte
// goes out: the header announces it, and the server can tell a sender that stopped short. Anything
// else (a pipe, a socket, a terminal, a FIFO) is a stream of unknown length: it is sent as it is
// read, with the header `MUXUP/1 - <name>`, and never copied anywhere first.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/loop/fd.hpp"

namespace mux {

struct UploadSource {
  Fd file;
  std::uint64_t offset = 0;           // where the bytes start (stdin may have been read from)
  std::optional<std::uint64_t> size;  // none: a stream, sent until its end
  std::string default_name;           // the base name of the path; "stdin" for -
};

// Throws std::runtime_error "<path>: <reason>" (missing, unreadable, a directory...).
UploadSource open_upload_source(const std::string& path);

}  // namespace mux
