// The flags every subcommand shares, defined once: --host, --port, -v/--verbose, -q/--quiet, and
// --serve for the two servers. Sizes accept K/M/G suffixes (see parse_size).
#pragma once

#include <cstdint>
#include <string>

#include "core/logger.hpp"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace mux {

struct CommonOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 5000;
  bool verbose = false;
  bool quiet = false;

  [[nodiscard]] Verbosity verbosity() const noexcept {
    return quiet ? Verbosity::quiet : (verbose ? Verbosity::verbose : Verbosity::normal);
  }
};

enum class ServeMode { single, fork };
const char* to_string(ServeMode mode) noexcept;

void add_common_flags(CLI::App& subcommand, CommonOptions& options);
void add_serve_flag(CLI::App& subcommand, ServeMode& mode);
// A byte count flag ("4096", "64K", "1MiB"); `minimum` is enforced with a clear message.
CLI::Option* add_size_flag(CLI::App& subcommand, const std::string& name, std::uint64_t& value,
                           const std::string& description, std::uint64_t minimum);

// A whole-number flag in [minimum, maximum], read as decimal.
CLI::Option* add_count_flag(CLI::App& subcommand, const std::string& name, std::uint64_t& value,
                            const std::string& description, std::uint64_t minimum,
                            std::uint64_t maximum);

}  // namespace mux
