// RedisNickClaims: the room-wide half of the nick registry (NickRegistry keeps the local half),
// in Redis: one key per look-alike key (mux:room:<NAME>:nick:<key>) naming the server that holds
// it (RoomSigner::nick_holder). A claim takes a nick unless a live server holds it, so the nicks
// of a server that stopped refreshing its presence (SIGKILL, a cut cable) come free after
// kPresenceTtl. With --room-secret-file the claim script answers the holder it found, which is
// checked here (Lua cannot) and taken over by compare-and-set when forged. Reconnect secrets
// cross servers as proofs (issue 23): the holder stores a digest of its session's secret with
// the nick, never the secret, and a reclaim that matches it takes the nick from a live ghost at
// once and announces a "k" line, which that ghost's server checks before it ends the ghost.
// The scripts are in chat/redis_room_scripts.hpp.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "chat/room_bus.hpp"
#include "chat/room_event.hpp"

namespace mux {

class Logger;
class RedisLink;
class RoomSigner;

class RedisNickClaims {
 public:
  using ClaimCallback = RoomBus::ClaimCallback;
  // A reclaim took a nick from its ghost on another server: the "k" line for the next batch.
  using Announce = std::function<void(chat::NickReclaim)>;

  // `prefix`: the room's key prefix; `presence_ttl`: how long a server's heartbeat counts.
  RedisNickClaims(RedisLink& link, Logger& logger, RoomSigner& signer, std::string prefix,
                  std::chrono::milliseconds presence_ttl, Announce announce);
  RedisNickClaims(const RedisNickClaims&) = delete;
  RedisNickClaims& operator=(const RedisNickClaims&) = delete;
  ~RedisNickClaims() { *alive_ = false; }

  // RoomBus::claim_nick, release_nick, set_nick_proof and reclaim_nick.
  void claim(const std::string& key, ClaimCallback done);
  void release(const std::string& key);
  void set_proof(const std::string& key, const std::string& proof);
  void reclaim(const std::string& key, const std::string& nick, const std::string& proof,
               const std::string& verifier, ClaimCallback done);

 private:
  [[nodiscard]] std::string nick_key(const std::string& key) const {
    return prefix_ + "nick:" + key;
  }

  RedisLink& link_;
  Logger& logger_;
  RoomSigner& signer_;
  std::string prefix_;
  std::string ttl_ms_;
  Announce announce_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mux
