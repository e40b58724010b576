#include "cli/common_options.hpp"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "core/units.hpp"

namespace mux {
namespace {

// CLI11 converts integers with base 0, so "010" would be octal 8 and "0x10" hex: people mean
// decimal. This accepts only decimal digits and hands CLI11 the canonical number.
CLI::Validator decimal_in_range(const char* what, std::uint64_t minimum, std::uint64_t maximum) {
  return CLI::Validator(
      [what, minimum, maximum](std::string& text) -> std::string {
        bool digits_only =
            !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        std::optional<std::uint64_t> parsed = digits_only ? parse_size(text) : std::nullopt;
        if (!parsed || *parsed < minimum || *parsed > maximum) {
          return fmt::format("'{}' is not {} ({}-{})", text, what, minimum, maximum);
        }
        text = std::to_string(*parsed);
        return {};
      },
      "");
}

}  // namespace

const char* to_string(ServeMode mode) noexcept {
  return mode == ServeMode::fork ? "fork" : "single";
}

void add_common_flags(CLI::App& subcommand, CommonOptions& options) {
  subcommand
      .add_option("--host", options.host, "Address to listen on or connect to (IPv4, IPv6 or name)")
      ->capture_default_str()
      ->type_name("HOST");
  subcommand.add_option("--port", options.port, "TCP port (0 picks a free port when listening)")
      ->capture_default_str()
      ->type_name("PORT")
      ->transform(decimal_in_range("a port number", 0, 65535));
  auto* verbose = subcommand.add_flag("-v,--verbose", options.verbose, "Log more detail");
  auto* quiet = subcommand.add_flag("-q,--quiet", options.quiet, "Log only errors");
  verbose->excludes(quiet);
}

void add_serve_flag(CLI::App& subcommand, ServeMode& mode) {
  CLI::Validator serve_mode(
      [](std::string& text) -> std::string {
        if (text == "single") {
          text = "0";
        } else if (text == "fork") {
          text = "1";
        } else {
          return fmt::format("'{}' is not a serving mode (single or fork)", text);
        }
        return {};
      },
      "");
  subcommand
      .add_option("--serve", mode,
                  "single: every client in one event loop; fork: a process per client")
      ->transform(serve_mode)
      ->type_name("single|fork")
      ->default_str("single");
}

CLI::Option* add_size_flag(CLI::App& subcommand, const std::string& name, std::uint64_t& value,
                           const std::string& description, std::uint64_t minimum) {
  CLI::Validator bytes(
      [minimum](std::string& text) -> std::string {
        std::optional<std::uint64_t> parsed = parse_size(text);
        if (!parsed)
          return fmt::format("'{}' is not a size (bytes, or a number with K, M or G)", text);
        if (*parsed < minimum) return fmt::format("{} is below the minimum of {}", text, minimum);
        text = std::to_string(*parsed);
        return {};
      },
      "");
  return subcommand.add_option(name, value, description)->transform(bytes)->type_name("BYTES");
}

}  // namespace mux

namespace mux {

CLI::Option* add_count_flag(CLI::App& subcommand, const std::string& name, std::uint64_t& value,
                            const std::string& description, std::uint64_t minimum,
                            std::uint64_t maximum) {
  return subcommand.add_option(name, value, description)
      ->transform(decimal_in_range("a whole number", minimum, maximum))
      ->type_name("N");
}

}  // namespace mux
