#include "chat/reconnect_secrets.hpp"

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "core/access/access_tokens.hpp"  // sha256_hex

namespace mux {

std::string ReconnectSecrets::proof_of(std::string_view secret) {
  return sha256_hex(fmt::format("mux nick proof\n{}", secret));
}

std::string ReconnectSecrets::verifier_of(std::string_view secret) {
  return sha256_hex(fmt::format("mux reclaim\n{}", secret));
}

const std::string& ReconnectSecrets::issue(std::uint64_t id, bool& made) {
  std::string& secret = secrets_[id];
  made = secret.empty();
  if (made) secret = chat::make_secret();
  return secret;
}

std::string_view ReconnectSecrets::of(std::uint64_t id) const {
  auto it = secrets_.find(id);
  return it == secrets_.end() ? std::string_view() : std::string_view(it->second);
}

bool ReconnectSecrets::proves(std::uint64_t id, std::string_view secret) const {
  std::string_view mine = of(id);
  return !mine.empty() && chat::same_secret(mine, secret);
}

bool ReconnectSecrets::verified_by(std::uint64_t id, std::string_view verifier) const {
  std::string_view mine = of(id);
  return !mine.empty() && chat::same_secret(verifier_of(mine), verifier);
}

}  // namespace mux
