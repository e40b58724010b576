// `mux chat-server`: group chat over TCP. Every line a client sends goes to every other client.
#pragma once

#include <cstdint>

#include "core/common_options.hpp"

namespace mux {

struct ChatServerOptions {
  CommonOptions common;
  ServeMode serve = ServeMode::single;
  std::uint64_t max_clients = 0;  // 0: as many as RLIMIT_NOFILE allows once raised
  std::uint64_t max_line = 4096;
  std::uint64_t max_queue = 1 << 20;
  // One address holding many idle connections must not lock out the others.
  std::uint64_t max_per_address = 32;
  // Seconds until TCP keepalive gives up on a silent peer (0: off).
  std::uint64_t keepalive = 60;
};

int run_chat_server(const ChatServerOptions& options);

}  // namespace mux
