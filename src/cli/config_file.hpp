// ConfigFile: the text of a `--config FILE`, split into settings. The format is one setting a
// line, `name = value`; `name` is a long flag without its `--` (`max-line = 4K`); a repeatable
// flag repeats its line; blank lines and lines whose first non-blank character is `#` are
// skipped. A `#` later in a line is part of the value (tokens and paths may hold one).
//
// Pure text in, settings out: whether a name is a flag and a value is good is CommandLine's
// business (it has the flag table), so this stays unit-testable and fuzzable on its own.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace mux {

struct ConfigSetting {
  std::string name;
  std::string value;
  std::size_t line = 0;  // 1-based, for `FILE:LINE:` in errors
};

struct ConfigParse {
  std::vector<ConfigSetting> settings;
  // Set when a line is not a setting: what is wrong with it, and which line (1-based).
  std::string error;
  std::size_t error_line = 0;
};

// Splits `text` into settings, stopping at the first line that is not one.
ConfigParse parse_config_text(std::string_view text);

}  // namespace mux
