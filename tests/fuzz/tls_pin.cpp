// --tls-pin values: parse_fingerprint and parse_pin (certificate fingerprints in every form
// openssl prints, public-key pins in curl's sha256//BASE64) against a reference that accepts a text
// exactly when it is one of the spellings of the 32 bytes it names (hex pairs checked with sscanf,
// base64 decoded and re-encoded by OpenSSL's EVP_DecodeBlock / EVP_EncodeBlock), then round trips:
// an accepted pin's normal form (format_fingerprint, as openssl prints it) parses back to the same
// 32 bytes, and so does every other spelling of them, generated here. A pin is the whole of a
// client's trust in a self-signed server: two texts must never name one certificate by accident,
// nor a damaged copy name another.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "core/tls/tls_stream.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::tls_pin {
namespace {

bool all_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

std::optional<Fingerprint> reference_hex(std::string_view text) {
  std::string digits;
  if (text.size() == 64) {
    digits = text;
  } else if (text.size() == 95) {
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (i % 3 == 2) {
        if (text[i] != ':') return std::nullopt;
      } else {
        digits += text[i];
      }
    }
  } else {
    return std::nullopt;
  }
  if (!all_hex(digits)) return std::nullopt;
  Fingerprint bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    unsigned value = 0;
    std::string pair = digits.substr(2 * i, 2);
    if (std::sscanf(pair.c_str(), "%2x", &value) != 1) return std::nullopt;
    bytes[i] = static_cast<std::uint8_t>(value);
  }
  return bytes;
}

// The canonical standard base64 of `bytes`, with its '='.
std::string base64_of(const Fingerprint& bytes) {
  std::array<unsigned char, 45> out{};  // 44 characters and the NUL EVP_EncodeBlock adds
  int length = EVP_EncodeBlock(out.data(), bytes.data(), static_cast<int>(bytes.size()));
  return std::string(reinterpret_cast<const char*>(out.data()), static_cast<std::size_t>(length));
}

std::string url_safe(std::string text) {
  std::replace(text.begin(), text.end(), '+', '-');
  std::replace(text.begin(), text.end(), '/', '_');
  return text;
}

std::vector<std::string> base64_spellings(const Fingerprint& bytes) {
  std::string standard = base64_of(bytes);
  std::string bare = standard.substr(0, standard.size() - 1);
  return {standard, bare, url_safe(standard), url_safe(bare)};
}

std::optional<Fingerprint> reference_base64(std::string_view text) {
  if (text.size() != 43 && text.size() != 44) return std::nullopt;
  std::string standard(text);
  std::replace(standard.begin(), standard.end(), '-', '+');
  std::replace(standard.begin(), standard.end(), '_', '/');
  if (standard.size() == 43) standard += '=';
  std::array<unsigned char, 33> decoded{};
  if (EVP_DecodeBlock(decoded.data(), reinterpret_cast<const unsigned char*>(standard.data()),
                      static_cast<int>(standard.size())) != 33)
    return std::nullopt;
  Fingerprint bytes{};
  std::copy_n(decoded.begin(), bytes.size(), bytes.begin());
  // Accepted only when the text is, character for character, one of the four spellings.
  std::vector<std::string> spellings = base64_spellings(bytes);
  if (std::find(spellings.begin(), spellings.end(), text) == spellings.end()) return std::nullopt;
  return bytes;
}

std::string lowered(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

// A certificate fingerprint: "sha256:" or "sha256 fingerprint=" (any case) then hex or base64;
// or hex with no prefix at all.
std::optional<Fingerprint> reference_parse(std::string_view text) {
  for (std::string_view prefix :
       {std::string_view("sha256:"), std::string_view("sha256 fingerprint=")}) {
    if (text.size() > prefix.size() && lowered(text.substr(0, prefix.size())) == prefix) {
      std::string_view value = text.substr(prefix.size());
      if (auto hex = reference_hex(value)) return hex;
      return reference_base64(value);
    }
  }
  return reference_hex(text);
}

// A --tls-pin: "sha256//" (any case) then standard base64 is a public-key pin, else a
// certificate fingerprint as above.
std::optional<Pin> reference_pin(std::string_view text) {
  if (text.size() >= 8 && lowered(text.substr(0, 8)) == "sha256//") {
    std::string_view value = text.substr(8);
    if (value.find_first_of("-_") != std::string_view::npos) return std::nullopt;
    std::optional<Fingerprint> digest = reference_base64(value);
    if (!digest) return std::nullopt;
    return Pin{Pin::Kind::public_key, *digest};
  }
  std::optional<Fingerprint> digest = reference_parse(text);
  if (!digest) return std::nullopt;
  return Pin{Pin::Kind::certificate, *digest};
}

std::string hex_of(const Fingerprint& bytes) {
  std::string text;
  for (std::uint8_t byte : bytes)
    text += fmt::format("{:02x}", byte);
  return text;
}

// Every spelling of `bytes` parses back to them; the normal form is exactly openssl's.
void check_spellings(const Fingerprint& bytes) {
  std::string normal = format_fingerprint(bytes);
  FUZZ_CHECK(normal.size() == 7 + 95 && normal.substr(0, 7) == "sha256:",
             fmt::format("normal form {}", normal));
  for (std::size_t i = 0; i < 95; ++i) {
    char c = normal[7 + i];
    FUZZ_CHECK(i % 3 == 2 ? c == ':'
                          : (std::isdigit(static_cast<unsigned char>(c)) || (c >= 'A' && c <= 'F')),
               fmt::format("normal form {}", normal));
  }
  std::string lower = hex_of(bytes);
  std::string upper_colons = normal.substr(7);
  std::vector<std::string> spellings = {normal,
                                        "SHA256:" + upper_colons,
                                        "sha256:" + lower,
                                        "Sha256:" + url_safe(base64_of(bytes)),
                                        "sha256 Fingerprint=" + upper_colons,
                                        "SHA256 Fingerprint=" + upper_colons,
                                        upper_colons,
                                        lower};
  for (const std::string& base64 : base64_spellings(bytes))
    spellings.push_back("sha256:" + base64);
  for (const std::string& spelling : spellings) {
    std::optional<Fingerprint> parsed = parse_fingerprint(spelling);
    FUZZ_CHECK(parsed && *parsed == bytes,
               fmt::format("{} does not parse back to {}", spelling, hex_of(bytes)));
    FUZZ_CHECK(parse_pin(spelling) == (Pin{Pin::Kind::certificate, bytes}), spelling);
  }
  // The same bytes as a public-key pin: curl's form, as the server logs it, and without its '='.
  std::string key_pin = format_key_pin(bytes);
  FUZZ_CHECK(key_pin == "sha256//" + base64_of(bytes), key_pin);
  for (const std::string& spelling :
       {key_pin, key_pin.substr(0, key_pin.size() - 1), "SHA256//" + key_pin.substr(8)}) {
    FUZZ_CHECK(parse_pin(spelling) == (Pin{Pin::Kind::public_key, bytes}),
               fmt::format("{} is not the key pin {}", spelling, hex_of(bytes)));
  }
}

}  // namespace

// The whole input is a --tls-pin value; its first 32 bytes (zeros past the end) are also a
// fingerprint whose every spelling must parse back to it.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<Fingerprint> parsed = parse_fingerprint(text);
  std::optional<Fingerprint> expected = reference_parse(text);
  FUZZ_CHECK(parsed.has_value() == expected.has_value(),
             fmt::format("{}: parse {} but the reference {}", printable(text),
                         parsed ? "accepts" : "refuses", expected ? "accepts" : "refuses"));
  std::optional<Pin> pin = parse_pin(text);
  std::optional<Pin> expected_pin = reference_pin(text);
  FUZZ_CHECK(pin == expected_pin,
             fmt::format("{}: parse_pin {} but the reference {}", printable(text),
                         pin ? hex_of(pin->digest) : "refuses",
                         expected_pin ? hex_of(expected_pin->digest) : "refuses"));
  if (parsed) {
    FUZZ_CHECK(*parsed == *expected,
               fmt::format("{}: {} but the reference reads {}", printable(text), hex_of(*parsed),
                           hex_of(*expected)));
    check_spellings(*parsed);
    // Whatever spelling was given, its normal form is the one the error messages show.
    FUZZ_CHECK(parse_fingerprint(format_fingerprint(*parsed)) == parsed, printable(text));
  }

  InputReader input(data, size);
  Fingerprint from_input{};
  for (std::uint8_t& byte : from_input)
    byte = input.take_byte();
  check_spellings(from_input);
}

}  // namespace mux::fuzz::tls_pin
