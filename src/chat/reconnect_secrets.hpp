// ReconnectSecrets: the reconnect secrets a room gives the sessions that ask for ids (issue 23),
// by member id, and what of them may leave this server. A secret lets a reconnecting client take
// its nick back from its old connection's ghost at once (/reclaim NICK SECRET); only sessions
// that asked for ids get one, so plain clients pay nothing. Never logged. The other servers of
// a Redis room see two digests of it under different labels, neither of which gives the secret
// or the other one: the proof stored in Redis with the nick, which a reclaim on another server
// must match, and the verifier that reclaim publishes, which this server checks against the
// secret itself before it ends the ghost. No I/O.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mux {

class ReconnectSecrets {
 public:
  // The proof and the verifier of `secret` (a /reclaim's, or one of ours).
  [[nodiscard]] static std::string proof_of(std::string_view secret);
  [[nodiscard]] static std::string verifier_of(std::string_view secret);

  // Member `id`'s secret, made on the first call; `made` tells whether it was made now.
  const std::string& issue(std::uint64_t id, bool& made);
  // Its secret; "" when it has none.
  [[nodiscard]] std::string_view of(std::uint64_t id) const;
  // Whether `secret` is member `id`'s (compared in constant time).
  [[nodiscard]] bool proves(std::uint64_t id, std::string_view secret) const;
  // Whether `verifier` (from a reclaim on another server) was made from member `id`'s secret.
  [[nodiscard]] bool verified_by(std::uint64_t id, std::string_view verifier) const;
  // The member left: its secret is no use any more.
  void forget(std::uint64_t id) { secrets_.erase(id); }

 private:
  std::unordered_map<std::uint64_t, std::string> secrets_;
};

}  // namespace mux
