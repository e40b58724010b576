// What --tls-pin names, and how a certificate's SHA-256 is written and read back: the server
// certificate's fingerprint in every form openssl prints one, or the public key's digest as curl's
// --pinnedpubkey takes it. Pure text functions (fuzzed in tests/fuzz/); TlsStream compares a
// client's pin with what the server shows (core/tls/tls_stream.hpp), TlsServerContext prints the
// pins clients give (core/tls/tls_context.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace mux {

// A SHA-256 certificate fingerprint (of the DER encoding, as `openssl x509 -fingerprint -sha256`).
using Fingerprint = std::array<std::uint8_t, 32>;

// "sha256:AB:CD:..." as openssl prints it; what an error shows and what --tls-pin accepts back.
std::string format_fingerprint(const Fingerprint& fingerprint);
// A certificate fingerprint in every form openssl prints one: "sha256:" or "sha256 Fingerprint="
// (any case; openssl 3 prints the second, 1.1 "SHA256 Fingerprint=") followed by 64 hex digits,
// bare or as 32 colon-separated pairs (any case), or by the canonical base64 of the 32 bytes (SSH
// style; standard or URL-safe alphabet; its one '=' optional); or the hex alone, without a
// prefix. nullopt when it is none of these; fuzzed in tests/fuzz/.
std::optional<Fingerprint> parse_fingerprint(const std::string& text);

// What --tls-pin names: the server's certificate (its SHA-256 fingerprint, changed by every
// renewal) or its public key (the SHA-256 of the DER SubjectPublicKeyInfo, as curl's
// --pinnedpubkey sha256//BASE64 takes it; unchanged by a renewal that keeps the key).
struct Pin {
  enum class Kind { certificate, public_key };
  Kind kind = Kind::certificate;
  Fingerprint digest{};
  friend bool operator==(const Pin&, const Pin&) = default;
};
// "sha256//BASE64=": curl's spelling of a public-key pin.
std::string format_key_pin(const Fingerprint& digest);
// "sha256//" (any case of "sha256") and the standard base64 of the 32 bytes (its '=' optional)
// is a public-key pin; anything parse_fingerprint takes is a certificate pin.
std::optional<Pin> parse_pin(const std::string& text);
// What parse_pin takes, for "expected ..." in errors.
extern const char* const kPinForms;

}  // namespace mux
