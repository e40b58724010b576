#include "cli/command_line.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <exception>
#include <ostream>

namespace mux {

CommandLine::CommandLine() : app_(std::make_unique<CLI::App>("mux: TCP group chat and upload server on one epoll core", "mux")) {
  app_->set_version_flag("--version", "mux " MUX_VERSION);
  app_->require_subcommand(1);
  app_->fallthrough(false);
  setup_chat_server(*app_, chat_server_);
  setup_chat_client(*app_, chat_client_);
  setup_upload_server(*app_, upload_server_);
  setup_upload_client(*app_, upload_client_);
}

CommandLine::~CommandLine() = default;

std::string CommandLine::selected() const {
  auto chosen = app_->get_subcommands();
  return chosen.empty() ? std::string() : chosen.front()->get_name();
}

int CommandLine::parse(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  std::vector<std::string> reversed(argv.rbegin(), argv.rend());
  if (!reversed.empty()) reversed.pop_back();  // program name
  try {
    app_->parse(reversed);
    return -1;
  } catch (const CLI::CallForHelp&) {
    CLI::App* target = app_.get();
    for (CLI::App* sub : app_->get_subcommands()) target = sub;
    out << target->help();
    return kExitSuccess;
  } catch (const CLI::CallForAllHelp&) {
    out << app_->help("", CLI::AppFormatMode::All);
    return kExitSuccess;
  } catch (const CLI::CallForVersion&) {
    out << "mux " MUX_VERSION "\n";
    return kExitSuccess;
  } catch (const CLI::ParseError& error) {
    // No subcommand, or an unknown one: the person needs the list of subcommands too.
    if (app_->get_subcommands().empty()) {
      err << app_->help();
      std::vector<std::string> extra = app_->remaining();
      if (!extra.empty()) {
        err << "mux: error: unknown subcommand '" << extra.front() << "'\n";
        return kExitUsage;
      }
    }
    err << "mux: error: " << error.what() << "\n";
    return kExitUsage;
  }
}

int CommandLine::run() {
  try {
    std::string name = selected();
    if (name == "chat-server") return run_chat_server(chat_server_);
    if (name == "chat-client") return run_chat_client(chat_client_);
    if (name == "upload-server") return run_upload_server(upload_server_);
    if (name == "upload-client") return run_upload_client(upload_client_);
    return kExitUsage;
  } catch (const std::exception& error) {
    fmt::print(stderr, "mux: error: {}\n", error.what());
    return kExitFailure;
  }
}

}  // namespace mux
