// Access tokens from --token-file: shared secrets a client must present before a server lets it
// chat or upload. The server keeps only SHA-256 digests and compares every one of them with
// CRYPTO_memcmp, so neither a token's content nor its length leaks through timing. The file is
// refused when group or others may access it, as ssh refuses a private key. Callers: the servers
// (AccessTokens), the clients (read_token_file, to send the first token). No sockets here.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mux {

class TokenFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Tokens are 1..kMaxTokenLength printable ASCII characters without spaces (they travel inside the
// upload header and after "/token " on a chat line). Blank lines and lines starting with # are
// skipped. Throws TokenFileError naming the file (and the line) when it is unusable.
std::vector<std::string> read_token_file(const std::string& path);

class AccessTokens {
 public:
  AccessTokens() = default;
  explicit AccessTokens(const std::vector<std::string>& tokens);
  static AccessTokens load(const std::string& path) { return AccessTokens(read_token_file(path)); }

  [[nodiscard]] bool required() const noexcept { return !digests_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return digests_.size(); }
  // Constant time in the presented token's content and in which token matches.
  [[nodiscard]] bool accepts(std::string_view presented) const;

  static constexpr std::size_t kMaxTokenLength = 512;
  static constexpr std::size_t kMaxFileBytes = 1 << 20;

 private:
  std::vector<std::array<std::uint8_t, 32>> digests_;
};

}  // namespace mux
