// CommandLine: the `mux` program's command line. Parses argv against the subcommand table
// (cli/flag_table.hpp) separately from running, so tests check flag handling in-process;
// renders --help from the same table; words every parse error itself (the parser library's
// wording never reaches a person). Maps every outcome to an exit status:
// 0 success, 1 runtime failure, 2 usage error. Called by main() only.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "cli/flag_table.hpp"

namespace mux {

inline constexpr int kExitSuccess = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

class CommandLine {
 public:
  CommandLine();
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;
  ~CommandLine();

  // Parses argv (argv[0] is the program name). Returns -1 when a subcommand should now run;
  // otherwise the exit status, after printing help/version to `out` or the error to `err`.
  // Help or version that cannot be written to `out` is a failure (status 1), not a success.
  int parse(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err);
  // Runs the parsed subcommand; runtime errors become `mux: error: ...` on stderr and status 1.
  // With --check, only validates (see Subcommand::check): "configuration ok" on stdout and 0, or
  // the error and 2.
  int run();

  [[nodiscard]] const ChatServerOptions& chat_server() const noexcept {
    return options_.chat_server;
  }
  [[nodiscard]] const ChatClientOptions& chat_client() const noexcept {
    return options_.chat_client;
  }
  [[nodiscard]] const UploadServerOptions& upload_server() const noexcept {
    return options_.upload_server;
  }
  [[nodiscard]] const UploadClientOptions& upload_client() const noexcept {
    return options_.upload_client;
  }
  [[nodiscard]] std::string selected() const;
  [[nodiscard]] const std::vector<Subcommand>& subcommands() const noexcept { return table_; }

  // The help texts, as --help prints them.
  [[nodiscard]] std::string program_help() const;
  [[nodiscard]] std::string subcommand_help(const Subcommand& subcommand) const;

 private:
  struct Parser;

  int usage_error(std::ostream& err, const std::string& message) const;
  int check_parsed(const std::vector<std::string>& argv, std::ostream& err) const;
  // Applies the --config file's settings that the command line did not give; adds each flag it
  // set to `from_file`. Returns -1, or the usage error's status (the error names FILE:LINE).
  int apply_config(const Subcommand& subcommand, std::vector<const FlagSpec*>& from_file,
                   std::ostream& err) const;
  // Stores again the value the command line gave `spec` (a file's value was just checked).
  void reassign_from_command_line(const FlagSpec& spec) const;
  int run_check(const Subcommand& subcommand) const;
  [[nodiscard]] const Subcommand* chosen() const;
  [[nodiscard]] std::string unknown_flag_message(const std::string& typed) const;

  AllOptions options_;
  std::vector<Subcommand> table_;
  std::unique_ptr<Parser> parser_;
};

// Flushes stdout; if anything written to it was lost (a full disk, a closed pipe), says so on
// stderr and turns a success into status 1. main() calls it last, as coreutils' close_stdout does.
int finish_standard_output(int status);

}  // namespace mux
