#include "chat/chat_server.hpp"

#include <CLI/CLI.hpp>

#include <stdexcept>

namespace mux {

void setup_chat_server(CLI::App& app, ChatServerOptions& options) {
  CLI::App* sub = app.add_subcommand("chat-server", "Group chat: every line a client sends goes to every other client");
  add_common_flags(*sub, options.common);
  add_serve_flag(*sub, options.serve);
  sub->add_option("--max-clients", options.max_clients,
                  "Most clients connected at once (default: what the fd limit allows)")
      ->type_name("N")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
  add_size_flag(*sub, "--max-line", options.max_line, "Longest line relayed; longer lines are cut", 1)
      ->capture_default_str();
  add_size_flag(*sub, "--max-queue", options.max_queue,
                "Output queued for one slow client before it is disconnected", 1024)
      ->capture_default_str();
}

int run_chat_server(const ChatServerOptions& /*options*/) {
  throw std::runtime_error("chat-server is not implemented yet");
}

}  // namespace mux
