// The one sanitizer for text a peer controls: chat lines and nicks, upload file names, and every
// peer-chosen field that reaches a log line. Whatever the input bytes, the output is valid UTF-8
// in which nothing can drive a terminal, reorder or hide text: C0 controls and DEL, C1 controls
// (raw bytes and U+0080..U+009F), bidirectional controls, zero-width and other invisible
// formatting characters, and ill-formed or overlong UTF-8 are all replaced by something visible.
// Pure functions, no I/O: the chat protocol, the upload protocol and the servers' log lines call
// them, and tests/unit/test_sanitize.cpp pins the rules down.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mux {

// One step of UTF-8 decoding (Table 3-7 of the Unicode standard: no overlongs, no surrogates,
// nothing above U+10FFFF). `length` is how many bytes were consumed: the whole sequence when
// `valid`, otherwise the maximal ill-formed subpart (at least 1 byte). `at_end` marks a sequence
// that is only ill-formed because the input stopped in its middle.
struct Utf8Step {
  char32_t code_point = 0;
  std::size_t length = 1;
  bool valid = false;
  bool at_end = false;
};
Utf8Step decode_utf8(std::string_view text, std::size_t at);

// U+0080..U+009F: the 8-bit controls (U+009B is CSI, as dangerous as ESC '[').
[[nodiscard]] constexpr bool is_c1_control(char32_t c) noexcept {
  return c >= 0x80 && c <= 0x9F;
}
// Bidirectional controls: they reorder what follows ("txt.exe" shown as "exe.txt").
bool is_bidi_control(char32_t c) noexcept;
// Characters that take no space or show nothing (zero-width space and joiners, soft hyphen,
// word joiner, BOM, Hangul fillers, tag characters, ...): they make different strings look equal.
bool is_invisible_format(char32_t c) noexcept;

struct SanitizeStyle {
  // How C0 controls and DEL appear: caret notation ("^[" for ESC, "^@" for NUL) when set, else
  // as `replacement`.
  bool caret_controls = true;
  // TAB passes as it is (chat text), or is replaced like any other control.
  bool keep_tab = true;
  // Stands in for a C1, bidi or invisible character and for each maximal ill-formed subpart.
  std::string_view replacement = "\xEF\xBF\xBD";  // U+FFFD
};

// For terminals and log lines: caret notation, TAB kept, U+FFFD for the rest.
inline constexpr SanitizeStyle kTextStyle{};
// For names a peer chose for a file: every replaced thing becomes '_', TAB too.
inline constexpr SanitizeStyle kFileNameStyle{false, false, "_"};

// Appends `raw` to `out`, sanitized. When `cut` is set the text was cut mid-stream, so an
// incomplete sequence at its very end is dropped rather than replaced.
void append_sanitized(std::string& out, std::string_view raw, bool cut = false,
                      const SanitizeStyle& style = kTextStyle);
std::string sanitized(std::string_view raw, const SanitizeStyle& style = kTextStyle);

// For a peer-controlled field inside a log line (an upload's name, a chat line quoted in a
// refusal): sanitized, and at most `max_bytes` long (cut on a character boundary, "..." added),
// so one peer cannot fill the log with a single line.
std::string log_field(std::string_view raw, std::size_t max_bytes = 200);

}  // namespace mux
