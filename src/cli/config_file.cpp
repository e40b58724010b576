#include "cli/config_file.hpp"

#include <fmt/format.h>

namespace mux {
namespace {

constexpr std::string_view kBlanks = " \t\r";

std::string_view trim(std::string_view text) {
  std::size_t first = text.find_first_not_of(kBlanks);
  if (first == std::string_view::npos) return {};
  std::size_t last = text.find_last_not_of(kBlanks);
  return text.substr(first, last - first + 1);
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// A name as shown in an error: printable ASCII only, so a binary file cannot garble the terminal.
std::string shown(std::string_view text) {
  std::string out;
  for (unsigned char c : text.substr(0, 64)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

}  // namespace

ConfigParse parse_config_text(std::string_view text) {
  ConfigParse parse;
  std::size_t number = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = trim(text.substr(start, end - start));
    start = end + 1;
    ++number;
    if (line.empty() || line.front() == '#') continue;
    auto fail = [&parse, number](std::string why) {
      parse.error = std::move(why);
      parse.error_line = number;
      return parse;
    };
    if (line.find('\0') != std::string_view::npos) return fail("a NUL byte (not a text file?)");
    std::size_t equals = line.find('=');
    if (equals == std::string_view::npos)
      return fail(fmt::format("'{}' is not a setting (expected 'name = value')", shown(line)));
    std::string_view name = trim(line.substr(0, equals));
    std::string_view value = trim(line.substr(equals + 1));
    if (name.empty()) return fail("a setting without a name (expected 'name = value')");
    if (!valid_name(name))
      return fail(fmt::format("'{}' is not a setting name (letters, digits and '-')", shown(name)));
    parse.settings.push_back({std::string(name), std::string(value), number});
  }
  return parse;
}

}  // namespace mux
