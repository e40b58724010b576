// CommandLine: the `mux` program's flags and subcommands (CLI11), parsed separately from running
// so tests can check flag handling in-process. Maps every outcome to an exit status:
// 0 success, 1 runtime failure, 2 usage error.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat_client.hpp"
#include "chat/chat_server.hpp"
#include "upload/upload_client.hpp"
#include "upload/upload_server.hpp"

namespace CLI {
class App;
}

namespace mux {

inline constexpr int kExitSuccess = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

class CommandLine {
 public:
  CommandLine();
  ~CommandLine();

  // Parses argv (argv[0] is the program name). Returns -1 when a subcommand should now run;
  // otherwise the exit status, after printing help/version to `out` or the error to `err`.
  int parse(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err);
  // Runs the parsed subcommand; runtime errors become `mux: error: ...` on stderr and status 1.
  int run();

  [[nodiscard]] const ChatServerOptions& chat_server() const noexcept { return chat_server_; }
  [[nodiscard]] const ChatClientOptions& chat_client() const noexcept { return chat_client_; }
  [[nodiscard]] const UploadServerOptions& upload_server() const noexcept { return upload_server_; }
  [[nodiscard]] const UploadClientOptions& upload_client() const noexcept { return upload_client_; }
  [[nodiscard]] std::string selected() const;

 private:
  std::unique_ptr<CLI::App> app_;
  ChatServerOptions chat_server_;
  ChatClientOptions chat_client_;
  UploadServerOptions upload_server_;
  UploadClientOptions upload_client_;
};

}  // namespace mux
