// ReconnectSecrets: one secret per member that asks, made once; what proves it here, and the
// two digests another server sees, which neither give it nor each other.
#include <doctest/doctest.h>

#include <string>

#include "chat/chat_protocol.hpp"
#include "chat/reconnect_secrets.hpp"

TEST_CASE("reconnect secrets: one per member, made once, forgotten when it leaves") {
  mux::ReconnectSecrets secrets;
  CHECK(secrets.of(1).empty());
  bool made = false;
  std::string first = secrets.issue(1, made);
  CHECK(made);
  CHECK(mux::chat::valid_secret(first));
  CHECK(secrets.issue(1, made) == first);
  CHECK_FALSE(made);
  std::string other = secrets.issue(2, made);
  CHECK(other != first);
  CHECK(secrets.of(1) == first);
  CHECK(secrets.proves(1, first));
  CHECK_FALSE(secrets.proves(1, other));
  CHECK_FALSE(secrets.proves(3, ""));  // no secret: nothing proves it, not even ""
  secrets.forget(1);
  CHECK(secrets.of(1).empty());
  CHECK_FALSE(secrets.proves(1, first));
}

TEST_CASE("reconnect secrets: the proof and the verifier are two digests, neither the secret") {
  mux::ReconnectSecrets secrets;
  bool made = false;
  std::string secret = secrets.issue(7, made);
  std::string proof = mux::ReconnectSecrets::proof_of(secret);
  std::string verifier = mux::ReconnectSecrets::verifier_of(secret);
  CHECK(proof.size() == 64);
  CHECK(verifier.size() == 64);
  CHECK(proof != verifier);
  CHECK(proof.find(secret) == std::string::npos);
  CHECK(secrets.verified_by(7, verifier));
  CHECK_FALSE(secrets.verified_by(7, proof));   // the stored proof does not end a session
  CHECK_FALSE(secrets.verified_by(7, secret));  // nor does the secret itself, sent as is
  CHECK_FALSE(secrets.verified_by(8, verifier));
  // The same secret gives the same digests on every server.
  CHECK(mux::ReconnectSecrets::proof_of(secret) == proof);
}
