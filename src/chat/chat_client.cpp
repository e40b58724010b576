#include "chat/chat_client.hpp"

#include <CLI/CLI.hpp>

#include <stdexcept>

namespace mux {

void setup_chat_client(CLI::App& app, ChatClientOptions& options) {
  CLI::App* sub = app.add_subcommand("chat-client", "Chat from a terminal or a pipe");
  add_common_flags(*sub, options.common);
  sub->add_option("--nick", options.nick, "Name to take right after connecting (sends /nick NAME)")
      ->type_name("NAME");
}

int run_chat_client(const ChatClientOptions& /*options*/) {
  throw std::runtime_error("chat-client is not implemented yet");
}

}  // namespace mux
