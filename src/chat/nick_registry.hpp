// NickRegistry: who holds which nick, on this server and room-wide. One nick per look-alike key
// (NickRules: "alice", "ALICE" and "аlice" with a Cyrillic "а" are one); default names cannot
// collide with nicks, since NickRules refuses anything that looks like "Client N". With a bus
// that reaches other servers a key is also claimed room-wide (RoomBus::claim_nick) before it is
// taken here, and released room-wide when its holder lets it go: the registry decides when,
// including the two cases that must not release it (a rename into a look-alike of one's own
// nick, and /reclaim's hand-over from a ghost to its successor). The room decides who may ask.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "chat/nick_rules.hpp"
#include "chat/room_bus.hpp"

namespace mux {

class ChatMember;

class NickRegistry {
 public:
  explicit NickRegistry(RoomBus& bus) : bus_(&bus) {}
  void set_bus(RoomBus& bus) { bus_ = &bus; }

  // Why `nick` can be nobody's (its form, then the look-alike rules), or nullopt.
  [[nodiscard]] std::optional<std::string> problem(std::string_view nick) const;
  [[nodiscard]] std::string key(std::string_view nick) const { return rules_.look_alike_key(nick); }
  // Who here holds `nick` or a look-alike of it (null: nobody).
  [[nodiscard]] ChatMember* holder(std::string_view nick) const;

  // `member` now holds `nick`. Its previous nick (`old_nick`, nullopt when it had a default
  // name) is free again here, and room-wide unless the new nick is a look-alike of it (the key
  // stays claimed).
  void take(ChatMember& member, std::optional<std::string_view> old_nick, std::string_view nick);
  // The holder of `nick` left: free here and room-wide.
  void release(std::string_view nick);
  // `nick` passes from its holder to a successor that takes it next (/reclaim): free here only,
  // so no other server can claim it in between.
  void hand_over(std::string_view nick);

  // Claims `key` room-wide (RoomBus::claim_nick).
  void claim(const std::string& key, RoomBus::ClaimCallback done);
  // Claims `key` room-wide, taking it from a ghost on another server whose proof matches
  // (RoomBus::reclaim_nick).
  void reclaim(const std::string& key, const std::string& nick, const std::string& proof,
               const std::string& verifier, RoomBus::ClaimCallback done);
  // A claim answered after its member left: a granted key nobody here holds is released.
  void abandon_claim(const std::string& key, bool granted);

  // The keys held here (the bus re-claims them after a reconnect).
  [[nodiscard]] std::vector<std::string> keys() const;
  // Every key held here with its holder.
  [[nodiscard]] std::vector<std::pair<std::string, const ChatMember*>> holders() const;
  [[nodiscard]] std::size_t size() const noexcept { return taken_.size(); }

 private:
  chat::NickRules rules_;
  std::unordered_map<std::string, ChatMember*> taken_;
  RoomBus* bus_;  // never null
};

}  // namespace mux
