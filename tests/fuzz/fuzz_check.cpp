#include "fuzz_check.hpp"

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace mux::fuzz {

void report_violation(const char* condition, const char* file, int line,
                      const std::string& detail) {
  std::string message =
      fmt::format("{}:{}: property violated: {} ({})", file, line, condition, detail);
#ifdef MUX_FUZZ_THROW_ON_VIOLATION
  throw PropertyViolation(message);
#else
  std::fprintf(stderr, "%s\n", message.c_str());
  std::abort();
#endif
}

std::string printable(std::string_view bytes) {
  std::string shown = "\"";
  for (char c : bytes) {
    auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      shown += '\\';
      shown += c;
    } else if (byte >= 0x20 && byte < 0x7F) {
      shown += c;
    } else {
      shown += fmt::format("\\x{:02x}", byte);
    }
  }
  return shown + '"';
}

}  // namespace mux::fuzz
