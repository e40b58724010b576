#include "chat/redis_nick_claims.hpp"

#include <utility>

#include "chat/redis_room_scripts.hpp"
#include "chat/room_signer.hpp"
#include "core/base/logger.hpp"
#include "core/redis/redis_link.hpp"

namespace mux {

RedisNickClaims::RedisNickClaims(RedisLink& link, Logger& logger, RoomSigner& signer,
                                 std::string prefix, std::chrono::milliseconds presence_ttl,
                                 Announce announce)
    : link_(link),
      logger_(logger),
      signer_(signer),
      prefix_(std::move(prefix)),
      ttl_ms_(std::to_string(presence_ttl.count())),
      announce_(std::move(announce)) {}

void RedisNickClaims::claim(const std::string& key, ClaimCallback done) {
  bool sent = link_.command(
      {"EVAL", room_scripts::kClaimScript.data(), "2", nick_key(key), prefix_ + "servers",
       signer_.nick_holder(key), ttl_ms_},
      [this, key, done, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock() || reply == nullptr) return done(std::nullopt);
        if (reply->type == RedisValue::Type::integer) return done(reply->integer == 1);
        if (reply->type != RedisValue::Type::string) return done(std::nullopt);
        // Held by a live server, says Redis; with a secret, only if that server signed it.
        if (signer_.holder_verified(key, reply->text)) return done(false);
        bool asked =
            link_.command({"EVAL", room_scripts::kOverrideScript, "1", nick_key(key), reply->text,
                           signer_.nick_holder(key)},
                          [done](const RedisValue* taken) {
                            if (taken == nullptr || taken->type != RedisValue::Type::integer)
                              return done(std::nullopt);
                            done(taken->integer == 1);
                          });
        if (!asked) done(std::nullopt);
      });
  if (!sent) done(std::nullopt);
}

void RedisNickClaims::release(const std::string& key) {
  link_.command({"EVAL", room_scripts::kReleaseScript, "2", nick_key(key), prefix_ + "proofs",
                 signer_.nick_holder(key)});
}

void RedisNickClaims::set_proof(const std::string& key, const std::string& proof) {
  link_.command({"EVAL", room_scripts::kProofScript, "2", nick_key(key), prefix_ + "proofs",
                 signer_.nick_holder(key), proof});
}

void RedisNickClaims::reclaim(const std::string& key, const std::string& nick,
                              const std::string& proof, const std::string& verifier,
                              ClaimCallback done) {
  bool sent = link_.command(
      {"EVAL", room_scripts::kReclaimScript.data(), "3", nick_key(key), prefix_ + "servers",
       prefix_ + "proofs", signer_.nick_holder(key), ttl_ms_, proof},
      [this, key, nick, verifier, done,
       alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;
        if (reply == nullptr) return done(std::nullopt);
        if (reply->type == RedisValue::Type::string && chat::valid_server_id(reply->text)) {
          // Taken from the server holding its ghost: that server ends the ghost once it has
          // checked the verifier against the ghost's secret. Announced before the rename that
          // follows (same batch), so everyone hears the ghost go first.
          logger_.info("redis: {} taken back from its previous connection on server {}", nick,
                       reply->text);
          announce_({nick, reply->text, verifier});
          return done(true);
        }
        if (reply->type != RedisValue::Type::integer) return done(std::nullopt);
        if (reply->integer == 1) return done(true);
        // No proof matched: an ordinary claim (which also overrides a holder that a
        // --room-secret-file room cannot verify).
        claim(key, done);
      });
  if (!sent) done(std::nullopt);
}

}  // namespace mux
