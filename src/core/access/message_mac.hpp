// MessageMac: HMAC-SHA256 under a secret that several servers share (chat-server's
// --room-secret-file), so each can tell what another wrote from what anyone else who can write
// to the same store (a Redis-level writer) put there. Tags are the first 128 bits of the HMAC in
// lower-case hex (32 characters, as RFC 4868 truncates HMAC-SHA256), over the parts given, each
// preceded by its length: no two lists of parts are hashed alike. Verification compares with
// CRYPTO_memcmp. The secret is never logged or shown. One object serves one thread (its HMAC
// context is reused per tag). No sockets here.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

namespace mux {

class MessageMac {
 public:
  static constexpr std::size_t kMinSecretBytes = 16;
  static constexpr std::size_t kMaxSecretBytes = 4096;
  static constexpr std::size_t kTagChars = 32;

  // The secret is the file's content without trailing spaces and line ends; read like a token
  // file (a regular file, mode 600, owned by this user or root). Throws SecretFileError naming
  // `flag` and the path, also when the secret is shorter than kMinSecretBytes.
  static MessageMac from_file(std::string_view flag, const std::string& path);
  explicit MessageMac(std::string_view secret);
  MessageMac(MessageMac&&) noexcept;
  MessageMac& operator=(MessageMac&&) noexcept;
  MessageMac(const MessageMac&) = delete;
  MessageMac& operator=(const MessageMac&) = delete;
  ~MessageMac();

  [[nodiscard]] std::string tag(std::initializer_list<std::string_view> parts) const;
  [[nodiscard]] bool verify(std::initializer_list<std::string_view> parts,
                            std::string_view tag) const;

 private:
  struct Keyed;  // the HMAC context with the key set, copied per tag
  std::unique_ptr<Keyed> keyed_;
};

}  // namespace mux
