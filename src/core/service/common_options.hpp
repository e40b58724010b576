// The options every subcommand shares (--host, --port, the log level) and the serving mode of
// the two servers, as plain structs: filled in by cli/ from its flag table, read by chat/ and
// upload/, which never see how they were parsed.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/logger.hpp"

namespace mux {

struct CommonOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 5000;
  bool verbose = false;
  bool quiet = false;
  Verbosity log_level = Verbosity::normal;  // --log-level (servers); -q and -v override it
  bool address_given = false;  // --host or --port was typed (socket activation ignores both)

  [[nodiscard]] Verbosity verbosity() const noexcept {
    return quiet ? Verbosity::quiet : (verbose ? Verbosity::verbose : log_level);
  }
};

enum class ServeMode { single, fork };

[[nodiscard]] constexpr const char* to_string(ServeMode mode) noexcept {
  return mode == ServeMode::fork ? "fork" : "single";
}

}  // namespace mux
