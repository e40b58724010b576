// The harness shared by every fuzz target. Each target is one `check_one_input(data, size)`
// function that feeds the bytes to a parser and asserts properties of what comes out. The same
// function is compiled twice: into a libFuzzer executable (clang, -Dfuzz=true), where a violated
// property aborts so libFuzzer saves the input, and into the ordinary unit tests (g++), where it
// throws so the corpus replay can name the file that broke it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mux::fuzz {

// Thrown (unit-test build) when a property does not hold.
class PropertyViolation : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void report_violation(const char* condition, const char* file, int line,
                                   const std::string& detail);

// Reads an input front to back; past its end it yields zeros and empty strings, so a target never
// has to check lengths before it takes what it needs.
class InputReader {
 public:
  InputReader(const std::uint8_t* data, std::size_t size)
      : bytes_(reinterpret_cast<const char*>(data), size) {}

  [[nodiscard]] bool empty() const noexcept { return bytes_.empty(); }
  [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size(); }

  std::uint8_t take_byte() {
    if (bytes_.empty()) return 0;
    auto byte = static_cast<std::uint8_t>(bytes_.front());
    bytes_.remove_prefix(1);
    return byte;
  }
  std::string_view take(std::size_t count) {
    std::string_view taken = bytes_.substr(0, count);
    bytes_.remove_prefix(taken.size());
    return taken;
  }
  std::string_view take_rest() { return take(bytes_.size()); }

 private:
  std::string_view bytes_;
};

// Strict UTF-8 validation (Unicode Table 3-7: no overlongs, no surrogates, nothing past
// U+10FFFF), written apart from the code under test so the two cannot share a bug. Calls
// `on_code_point` for each scalar value; returns false at the first ill-formed sequence.
template <typename Visitor>
bool for_each_code_point(std::string_view text, Visitor&& on_code_point) {
  std::size_t at = 0;
  while (at < text.size()) {
    auto lead = static_cast<unsigned char>(text[at]);
    std::size_t length = 0;
    char32_t value = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (lead < 0x80) {
      length = 1;
      value = lead;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      value = lead & 0x1Fu;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      value = lead & 0x0Fu;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      value = lead & 0x07u;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (at + length > text.size()) return false;
    for (std::size_t i = 1; i < length; ++i) {
      auto byte = static_cast<unsigned char>(text[at + i]);
      unsigned char min = i == 1 ? low : 0x80;
      unsigned char max = i == 1 ? high : 0xBF;
      if (byte < min || byte > max) return false;
      value = (value << 6) | (byte & 0x3Fu);
    }
    on_code_point(value);
    at += length;
  }
  return true;
}

inline bool is_valid_utf8(std::string_view text) {
  return for_each_code_point(text, [](char32_t) {});
}

// Shows bytes as a C string literal would, for violation messages.
std::string printable(std::string_view bytes);

}  // namespace mux::fuzz

// Asserts a property of the code under test; `detail` is any expression convertible to
// std::string (evaluated only on failure).
#define FUZZ_CHECK(condition, detail)                                                          \
  do {                                                                                         \
    if (!(condition)) ::mux::fuzz::report_violation(#condition, __FILE__, __LINE__, (detail)); \
  } while (false)
