// --config file text: parse_config_text, then properties of what it returns. Every setting has a
// name of letters, digits, '-' and '_' and a value without blanks at either end or a line break;
// line numbers rise and stay within the text; the settings written back one a line parse to the
// same names and values; and a refusal names a line whose text alone is refused the same way,
// after lines that parse. The file is written by an administrator, but read as root by a unit's
// ExecStartPre, so no input may crash the parse or slip a second setting into a value.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "cli/config_file.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::config_file {
namespace {

bool name_character(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

bool blank(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

}  // namespace

void check_one_input(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  ConfigParse parsed = parse_config_text(text);
  std::vector<std::string_view> lines = lines_of(text);

  std::size_t previous_line = 0;
  for (const ConfigSetting& setting : parsed.settings) {
    FUZZ_CHECK(!setting.name.empty(), "a setting without a name");
    for (char c : setting.name)
      FUZZ_CHECK(name_character(c), fmt::format("name {}", printable(setting.name)));
    FUZZ_CHECK(setting.value.find('\n') == std::string::npos, printable(setting.value));
    FUZZ_CHECK(setting.value.find('\0') == std::string::npos, printable(setting.value));
    FUZZ_CHECK(
        setting.value.empty() || (!blank(setting.value.front()) && !blank(setting.value.back())),
        fmt::format("value {} keeps blanks", printable(setting.value)));
    FUZZ_CHECK(setting.line > previous_line && setting.line <= lines.size(),
               fmt::format("line {} after {} of {}", setting.line, previous_line, lines.size()));
    previous_line = setting.line;
    // The setting's own line holds its name, then '=', then its value.
    std::string_view line = lines[setting.line - 1];
    FUZZ_CHECK(line.find(setting.name) < line.find('='), printable(line));
  }

  if (!parsed.error.empty()) {
    FUZZ_CHECK(parsed.error_line >= 1 && parsed.error_line <= lines.size(),
               fmt::format("error on line {} of {}", parsed.error_line, lines.size()));
    FUZZ_CHECK(previous_line < parsed.error_line, "a setting after the refused line");
    ConfigParse alone = parse_config_text(lines[parsed.error_line - 1]);
    FUZZ_CHECK(alone.error == parsed.error && alone.error_line == 1,
               fmt::format("line {} ({}) alone: {}", parsed.error_line,
                           printable(lines[parsed.error_line - 1]), alone.error));
    return;
  }
  FUZZ_CHECK(parsed.error_line == 0, "an error line without an error");

  // Written back in the normal form, the settings parse to themselves, numbered 1, 2, ...
  std::string normal;
  for (const ConfigSetting& setting : parsed.settings)
    normal += setting.name + " = " + setting.value + "\n";
  ConfigParse again = parse_config_text(normal);
  FUZZ_CHECK(again.error.empty() && again.settings.size() == parsed.settings.size(),
             fmt::format("{}: {}", printable(normal), again.error));
  for (std::size_t index = 0; index < again.settings.size(); ++index) {
    const ConfigSetting& before = parsed.settings[index];
    const ConfigSetting& after = again.settings[index];
    FUZZ_CHECK(after.name == before.name && after.value == before.value && after.line == index + 1,
               fmt::format("{} = {} came back as {} = {}", printable(before.name),
                           printable(before.value), printable(after.name), printable(after.value)));
  }
}

}  // namespace mux::fuzz::config_file
