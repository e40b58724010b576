// Flag values a person (or a script) types: parse_size on its own, then --port, --max-clients,
// --max-line and --max-size through the real command line, compared with a reference reading.
// Bounds that other work may still tighten are not pinned here: an accepted value must be read
// exactly, a refused one must give exit status 2 and one error line naming the flag, and values
// well inside any sane range must be accepted.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "cli/command_line.hpp"
#include "core/base/units.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::flag_values {
namespace {

// At most 2^64 - 1, compared as text so nothing here can overflow.
std::optional<std::uint64_t> reference_decimal(std::string_view text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  std::string_view significant = text.substr(std::min(text.find_first_not_of('0'), text.size()));
  constexpr std::string_view kMax = "18446744073709551615";
  if (significant.size() > kMax.size() || (significant.size() == kMax.size() && significant > kMax))
    return std::nullopt;
  std::uint64_t value = 0;
  for (char c : significant)
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  return value;
}

std::string lower(std::string_view text) {
  std::string lowered(text);
  for (char& c : lowered)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return lowered;
}

// A byte count: digits, then nothing, B, or K/M/G/T with an optional B or iB (any case).
std::optional<std::uint64_t> reference_size(std::string_view text) {
  std::size_t digits = text.find_first_not_of("0123456789");
  if (digits == std::string_view::npos) digits = text.size();
  std::optional<std::uint64_t> value = reference_decimal(text.substr(0, digits));
  if (!value) return std::nullopt;
  std::string suffix = lower(text.substr(digits));
  unsigned shift = 0;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else if (std::string_view("kmgt").find(suffix[0]) != std::string_view::npos &&
             (suffix.size() == 1 || suffix.substr(1) == "b" || suffix.substr(1) == "ib")) {
    shift = 10 * static_cast<unsigned>(std::string_view("kmgt").find(suffix[0]) + 1);
  } else {
    return std::nullopt;
  }
  // Shifting back must give the number again, or bits fell off the top.
  std::uint64_t scaled = *value << shift;
  if ((scaled >> shift) != *value) return std::nullopt;
  return scaled;
}

void check_parse_size(std::string_view text) {
  std::optional<std::uint64_t> parsed = parse_size(text);
  std::optional<std::uint64_t> expected = reference_size(text);
  if (parsed) FUZZ_CHECK(parsed == expected, printable(text));
  // More than 20 digits (leading zeros included) may be refused; anything else readable is not.
  std::size_t digits = text.find_first_not_of("0123456789");
  if (expected && (digits == std::string_view::npos ? text.size() : digits) <= 20)
    FUZZ_CHECK(parsed.has_value(), printable(text));
}

enum class Kind { decimal, size };

struct FlagCase {
  const char* subcommand;
  const char* flag;
  Kind kind;
  std::uint64_t must_accept_low;  // every value in [low, high] is accepted
  std::uint64_t must_accept_high;
  std::uint64_t (*read)(const CommandLine&);
};

const FlagCase kFlagCases[] = {
    {"chat-server", "--port", Kind::decimal, 0, 65535,
     [](const CommandLine& c) -> std::uint64_t { return c.chat_server().common.port; }},
    {"chat-server", "--max-clients", Kind::decimal, 1, 1000,
     [](const CommandLine& c) -> std::uint64_t { return c.chat_server().max_clients; }},
    {"chat-server", "--max-line", Kind::size, 1, 4096,
     [](const CommandLine& c) -> std::uint64_t { return c.chat_server().max_line; }},
    {"upload-server", "--max-size", Kind::size, 1, std::uint64_t{1} << 40,
     [](const CommandLine& c) -> std::uint64_t { return c.upload_server().max_size; }},
    {"upload-server", "--max-clients", Kind::decimal, 1, 1000,
     [](const CommandLine& c) -> std::uint64_t { return c.upload_server().max_clients; }},
};

void check_flag(const FlagCase& flag, std::string_view text) {
  CommandLine command_line;
  std::ostringstream out;
  std::ostringstream err;
  std::vector<std::string> argv = {"mux", flag.subcommand, fmt::format("{}={}", flag.flag, text)};
  int status = command_line.parse(argv, out, err);
  std::optional<std::uint64_t> expected =
      flag.kind == Kind::decimal ? reference_decimal(text) : reference_size(text);
  std::string context =
      fmt::format("{} {} -> {} {}", flag.subcommand, argv[2], status, printable(err.str()));
  if (status == -1) {
    FUZZ_CHECK(expected.has_value(), context);
    FUZZ_CHECK(
        flag.read(command_line) == *expected,
        fmt::format("{}: read {}, expected {}", context, flag.read(command_line), *expected));
    return;
  }
  FUZZ_CHECK(status == kExitUsage, context);
  FUZZ_CHECK(out.str().empty(), context);
  std::string errors = err.str();
  FUZZ_CHECK(errors.rfind("mux: error: ", 0) == 0 && errors.find(flag.flag) != std::string::npos,
             context);
  // Safe values are never refused (20-digit zero padding aside, as for parse_size).
  bool plain = text.size() <= 20 && text.find_first_of("\r\n") == std::string_view::npos;
  if (expected && plain)
    FUZZ_CHECK(*expected < flag.must_accept_low || *expected > flag.must_accept_high, context);
}

}  // namespace

// Layout: one byte picks the flag, the rest is its value.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  const FlagCase& flag = kFlagCases[input.take_byte() % std::size(kFlagCases)];
  std::string_view text = input.take_rest();
  check_parse_size(text);
  // A real argv string ends at its first NUL.
  check_flag(flag, text.substr(0, text.find('\0')));
}

}  // namespace mux::fuzz::flag_values
