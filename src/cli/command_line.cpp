#include "cli/command_line.hpp"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <ostream>

namespace mux {

CommandLine::CommandLine()
    : app_(std::make_unique<CLI::App>("mux: TCP group chat and upload server on one epoll core",
                                      "mux")) {
  app_->set_version_flag("--version", "mux " MUX_VERSION);
  app_->require_subcommand(1);
  app_->fallthrough(false);
  setup_chat_server(*app_, chat_server_);
  setup_chat_client(*app_, chat_client_);
  setup_upload_server(*app_, upload_server_);
  setup_upload_client(*app_, upload_client_);
  // Subcommands collect stray arguments instead of throwing, so parse() can name the first one
  // as typed (CLI11 2.1's own message lists them in reverse).
  for (const char* name : {"chat-server", "chat-client", "upload-server", "upload-client"}) {
    app_->get_subcommand(name)->allow_extras();
  }
  app_->allow_extras();
}

CommandLine::~CommandLine() = default;

std::string CommandLine::selected() const {
  auto chosen = app_->get_subcommands();
  return chosen.empty() ? std::string() : chosen.front()->get_name();
}

int CommandLine::parse(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  // CLI11 takes the arguments as argc/argv here so its messages list them in the order typed.
  std::vector<const char*> pointers;
  for (const std::string& arg : argv)
    pointers.push_back(arg.c_str());
  if (pointers.empty()) pointers.push_back("mux");
  try {
    app_->parse(static_cast<int>(pointers.size()), pointers.data());
    std::vector<std::string> extra = app_->remaining(true);
    if (!extra.empty()) {
      err << "mux: error: unexpected argument '" << extra.front() << "'\n";
      return kExitUsage;
    }
    return -1;
  } catch (const CLI::CallForHelp&) {
    CLI::App* target = app_.get();
    for (CLI::App* sub : app_->get_subcommands())
      target = sub;
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
