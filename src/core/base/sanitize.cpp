#include "core/base/sanitize.hpp"

namespace mux {
namespace {

// The range the second byte must fall in, by lead byte; later bytes are always 80..BF. This is
// Table 3-7 of the Unicode standard: it excludes overlongs, surrogates and values > U+10FFFF.
bool second_byte_ok(unsigned char lead, unsigned char byte) {
  if (lead == 0xE0) return byte >= 0xA0 && byte <= 0xBF;
  if (lead == 0xED) return byte >= 0x80 && byte <= 0x9F;
  if (lead == 0xF0) return byte >= 0x90 && byte <= 0xBF;
  if (lead == 0xF4) return byte >= 0x80 && byte <= 0x8F;
  return byte >= 0x80 && byte <= 0xBF;
}

bool is_plain_ascii(char c) {
  return c >= 0x20 && c < 0x7F;
}

bool is_utf8_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

}  // namespace

Utf8Step decode_utf8(std::string_view text, std::size_t at) {
  auto lead = static_cast<unsigned char>(text[at]);
  if (lead < 0x80) return {lead, 1, true, false};
  std::size_t needed = 0;
  char32_t value = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 1;
    value = lead & 0x1Fu;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 2;
    value = lead & 0x0Fu;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 3;
    value = lead & 0x07u;
  } else {
    return {};  // a stray continuation byte, C0/C1 (overlong) or F5..FF: never valid
  }
  for (std::size_t i = 1; i <= needed; ++i) {
    if (at + i >= text.size()) return {0, i, false, true};
    auto byte = static_cast<unsigned char>(text[at + i]);
    bool ok = i == 1 ? second_byte_ok(lead, byte) : (byte >= 0x80 && byte <= 0xBF);
    if (!ok) return {0, i, false, false};
    value = (value << 6) | (byte & 0x3Fu);
  }
  return {value, needed + 1, true, false};
}

bool is_bidi_control(char32_t c) noexcept {
  return c == 0x061C || c == 0x200E || c == 0x200F || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2066 && c <= 0x2069);
}

bool is_invisible_format(char32_t c) noexcept {
  // Zero-width and format characters (general category Cf and the invisible fillers), plus the
  // line and paragraph separators that some terminals treat as a newline. Variation selectors are
  // kept: they only pick the glyph of the character before them (the emoji forms).
  return c == 0x00AD || c == 0x034F || c == 0x115F || c == 0x1160 || c == 0x17B4 || c == 0x17B5 ||
         (c >= 0x180B && c <= 0x180E && c != 0x180D) || (c >= 0x200B && c <= 0x200D) ||
         c == 0x2028 || c == 0x2029 || (c >= 0x2060 && c <= 0x2065) ||
         (c >= 0x206A && c <= 0x206F) || c == 0x3164 || c == 0xFEFF || c == 0xFFA0 ||
         (c >= 0xFFF9 && c <= 0xFFFB) || (c >= 0x1BCA0 && c <= 0x1BCA3) ||
         (c >= 0x1D173 && c <= 0x1D17A) || (c >= 0xE0000 && c <= 0xE007F);
}

void append_sanitized(std::string& out, std::string_view raw, bool cut,
                      const SanitizeStyle& style) {
  out.reserve(out.size() + raw.size());
  std::size_t at = 0;
  while (at < raw.size()) {
    // Fast path: most text is printable ASCII; copy runs of it at once.
    std::size_t run = at;
    while (run < raw.size() && is_plain_ascii(raw[run]))
      ++run;
    out.append(raw.substr(at, run - at));
    at = run;
    if (at == raw.size()) break;

    auto byte = static_cast<unsigned char>(raw[at]);
    if (byte < 0x20 || byte == 0x7F) {
      if (byte == '\t' && style.keep_tab) {
        out.push_back('\t');
      } else if (style.caret_controls) {
        out.push_back('^');
        out.push_back(static_cast<char>(byte ^ 0x40));
      } else {
        out.append(style.replacement);
      }
      ++at;
      continue;
    }
    Utf8Step step = decode_utf8(raw, at);
    if (step.valid && !is_c1_control(step.code_point) && !is_bidi_control(step.code_point) &&
        !is_invisible_format(step.code_point)) {
      out.append(raw.substr(at, step.length));
    } else if (!(step.at_end && cut)) {
      out.append(style.replacement);
    }
    at += step.length;
  }
}

std::string sanitized(std::string_view raw, const SanitizeStyle& style) {
  std::string out;
  append_sanitized(out, raw, false, style);
  return out;
}

std::string log_field(std::string_view raw, std::size_t max_bytes) {
  std::string out;
  bool truncated = raw.size() > max_bytes;
  append_sanitized(out, raw.substr(0, max_bytes), truncated);
  if (out.size() > max_bytes) {  // replacements can make the text longer than the input
    truncated = true;
    std::size_t cut = max_bytes;
    while (cut > 0 && is_utf8_continuation(out[cut]))
      --cut;
    out.resize(cut);
  }
  if (truncated) out += "...";
  return out;
}

}  // namespace mux
