// `mux chat-client`: stdin and the socket multiplexed in one event loop.
#pragma once

#include <string>

#include "cli/common_options.hpp"

namespace CLI {
class App;
}

namespace mux {

struct ChatClientOptions {
  CommonOptions common;
  std::string nick;  // empty: keep the server's default name
};

void setup_chat_client(CLI::App& app, ChatClientOptions& options);
int run_chat_client(const ChatClientOptions& options);

}  // namespace mux
