// ChatAccess: what a chat client must get through before it joins the room — the TLS handshake
// (the Connection's on_ready) and, with --token-file, a token as its first line:
//
//   /token SECRET
//
// (what an ncat or openssl s_client user types first). A wrong or missing token is answered, after
// the FailureThrottle's delay for that address, with "* unauthorized" and a close; the room never
// sees the client: no join notice, not in /who. Without --token-file a first "/token ..." line is
// swallowed, so a client configured with a token still works against a server that needs none.
// Each client goes through it with a TokenGate (chat/token_gate.hpp), in LocalMember (single mode)
// and the fork-mode child (ChildRelay); owned by the server.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

#include "core/access/access_tokens.hpp"
#include "core/base/logger.hpp"

namespace mux {

struct ChatAccess {
  const AccessTokens* tokens = nullptr;  // null or empty: no token required
  FailureThrottle* throttle = nullptr;   // set whenever tokens are required
  Logger* logger = nullptr;              // for clients that leave before joining
  // --auth-timeout: handshake and token must be done within this (zero: no deadline).
  std::chrono::milliseconds auth_timeout{10'000};

  [[nodiscard]] bool tokens_required() const noexcept {
    return tokens != nullptr && tokens->required();
  }
};

namespace chat {

inline constexpr std::string_view kUnauthorized = "* unauthorized\n";

// The token of a "/token SECRET" line, or nullopt when the line is something else.
inline std::optional<std::string_view> token_of_line(std::string_view line) {
  constexpr std::string_view prefix = "/token ";
  if (line.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string_view token = line.substr(prefix.size());
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t'))
    token.remove_suffix(1);
  return token;
}

}  // namespace chat
}  // namespace mux
