// `mux chat-client`: stdin and the server's Connection multiplexed in one event loop.
#pragma once

#include <chrono>
#include <string>

#include "core/service/client_link.hpp"
#include "core/service/common_options.hpp"

namespace mux {

struct ChatClientOptions {
  CommonOptions common;
  ClientLinkOptions link;   // connect timeout, TLS, token
  std::string nick;         // empty: keep the server's default name
  bool timestamps = false;  // prefix received lines with the local time, HH:MM:SS
  // After the end of input: how long without progress to wait for the server's close, the
  // proof that it read everything (exit 1 without it).
  std::chrono::milliseconds confirm_timeout{10'000};
  // A dropped connection (after the server greeted us) is made again, with backoff and jitter,
  // for up to reconnect_timeout; then exit 1. no_reconnect (--no-reconnect): exit 1 at once.
  bool no_reconnect = false;
  std::chrono::milliseconds reconnect_timeout{120'000};
};

int run_chat_client(const ChatClientOptions& options);

}  // namespace mux
