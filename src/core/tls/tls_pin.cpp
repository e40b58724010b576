#include "core/tls/tls_pin.hpp"

#include <strings.h>

#include <string_view>

#include <fmt/format.h>

namespace mux {

std::string format_fingerprint(const Fingerprint& fingerprint) {
  std::string text = "sha256:";
  for (std::size_t i = 0; i < fingerprint.size(); ++i) {
    if (i > 0) text += ':';
    text += fmt::format("{:02X}", fingerprint[i]);
  }
  return text;
}

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Either 64 digits, or 32 pairs joined by single colons as openssl prints them: a stray,
// doubled or misplaced colon is a sign of a damaged copy, so it is refused, not skipped.
std::optional<Fingerprint> parse_hex(std::string_view text) {
  Fingerprint result{};
  bool with_colons = text.size() == result.size() * 3 - 1;
  if (!with_colons && text.size() != result.size() * 2) return std::nullopt;
  std::size_t stride = with_colons ? 3 : 2;
  for (std::size_t i = 0; i < result.size(); ++i) {
    std::size_t at = i * stride;
    if (with_colons && i > 0 && text[at - 1] != ':') return std::nullopt;
    int high = hex_value(text[at]);
    int low = hex_value(text[at + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    result[i] = static_cast<std::uint8_t>(high * 16 + low);
  }
  return result;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;  // standard and URL-safe alphabets
  if (c == '/' || c == '_') return 63;
  return -1;
}

// 32 bytes are 43 base64 digits, the last carrying 4 bits (its other 2 must be zero), and one
// '=' of padding that may be left out. One alphabet per text, standard or URL-safe. So every
// fingerprint has exactly four base64 spellings, and no two texts that differ mean one pin by
// accident of bits that are thrown away.
std::optional<Fingerprint> parse_base64(std::string_view text) {
  if (text.size() == 44 && text.back() == '=') text.remove_suffix(1);
  if (text.size() != 43) return std::nullopt;
  if (text.find_first_of("+/") != std::string_view::npos &&
      text.find_first_of("-_") != std::string_view::npos)
    return std::nullopt;
  Fingerprint result{};
  std::uint32_t bits = 0;
  int bit_count = 0;
  std::size_t out = 0;
  for (char c : text) {
    int value = base64_value(c);
    if (value < 0) return std::nullopt;
    bits = ((bits << 6) | static_cast<std::uint32_t>(value)) & 0xFFFFu;
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      result[out++] = static_cast<std::uint8_t>(bits >> bit_count);
    }
  }
  // 43 * 6 = 258 bits: 32 bytes and 2 left over, which canonical base64 leaves zero.
  if (out != result.size() || bit_count != 2 || (bits & 0x3u) != 0) return std::nullopt;
  return result;
}

}  // namespace

const char* const kPinForms =
    "a certificate fingerprint as openssl x509 -noout -fingerprint -sha256 prints it "
    "(sha256 Fingerprint=AB:CD:..., sha256:AB:CD:..., or the 64 hex digits alone) or a public-key "
    "pin as curl takes it (sha256//BASE64)";

std::string format_key_pin(const Fingerprint& digest) {
  static constexpr char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text = "sha256//";
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (std::uint8_t byte : digest) {
    bits = (bits << 8) | byte;
    bit_count += 8;
    while (bit_count >= 6) {
      bit_count -= 6;
      text += kDigits[(bits >> bit_count) & 0x3Fu];
    }
  }
  // 256 bits: 42 digits and 4 bits left, padded with two zero bits to a 43rd digit, then '='.
  text += kDigits[(bits << (6 - bit_count)) & 0x3Fu];
  text += '=';
  return text;
}

std::optional<Fingerprint> parse_fingerprint(const std::string& text) {
  // Longest first: "sha256 fingerprint=" is not a "sha256:".
  for (std::string_view prefix :
       {std::string_view("sha256 fingerprint="), std::string_view("sha256:")}) {
    if (text.size() > prefix.size() &&
        strncasecmp(text.c_str(), prefix.data(), prefix.size()) == 0) {
      std::string_view value = std::string_view(text).substr(prefix.size());
      if (auto hex = parse_hex(value)) return hex;
      return parse_base64(value);
    }
  }
  return parse_hex(text);  // pasted without its prefix: hex only (bare base64 is not a pin)
}

std::optional<Pin> parse_pin(const std::string& text) {
  constexpr std::string_view key_prefix = "sha256//";
  if (text.size() >= key_prefix.size() &&
      strncasecmp(text.c_str(), key_prefix.data(), key_prefix.size()) == 0) {
    std::string_view value = std::string_view(text).substr(key_prefix.size());
    // curl's form is standard base64; the URL-safe alphabet is not taken for it.
    if (value.find_first_of("-_") != std::string_view::npos) return std::nullopt;
    std::optional<Fingerprint> digest = parse_base64(value);
    if (!digest) return std::nullopt;
    return Pin{Pin::Kind::public_key, *digest};
  }
  std::optional<Fingerprint> digest = parse_fingerprint(text);
  if (!digest) return std::nullopt;
  return Pin{Pin::Kind::certificate, *digest};
}

}  // namespace mux
