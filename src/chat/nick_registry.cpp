#include "chat/nick_registry.hpp"

#include <utility>

#include "chat/chat_protocol.hpp"

namespace mux {

std::optional<std::string> NickRegistry::problem(std::string_view nick) const {
  std::optional<std::string> problem = chat::nick_problem(nick);
  if (!problem) problem = rules_.problem(nick);
  return problem;
}

ChatMember* NickRegistry::holder(std::string_view nick) const {
  auto taken = taken_.find(key(nick));
  return taken == taken_.end() ? nullptr : taken->second;
}

void NickRegistry::take(ChatMember& member, std::optional<std::string_view> old_nick,
                        std::string_view nick) {
  std::string new_key = key(nick);
  if (old_nick) {
    std::string old_key = key(*old_nick);
    taken_.erase(old_key);
    if (old_key != new_key) bus_->release_nick(old_key);
  }
  taken_[std::move(new_key)] = &member;
}

void NickRegistry::release(std::string_view nick) {
  std::string old_key = key(nick);
  taken_.erase(old_key);
  bus_->release_nick(old_key);
}

void NickRegistry::hand_over(std::string_view nick) {
  taken_.erase(key(nick));
}

void NickRegistry::claim(const std::string& key, RoomBus::ClaimCallback done) {
  bus_->claim_nick(key, std::move(done));
}

void NickRegistry::reclaim(const std::string& key, const std::string& nick,
                           const std::string& proof, const std::string& verifier,
                           RoomBus::ClaimCallback done) {
  bus_->reclaim_nick(key, nick, proof, verifier, std::move(done));
}

std::vector<std::pair<std::string, const ChatMember*>> NickRegistry::holders() const {
  return {taken_.begin(), taken_.end()};
}

void NickRegistry::abandon_claim(const std::string& key, bool granted) {
  if (granted && !taken_.contains(key)) bus_->release_nick(key);
}

std::vector<std::string> NickRegistry::keys() const {
  std::vector<std::string> keys;
  keys.reserve(taken_.size());
  for (const auto& [key, member] : taken_)
    keys.push_back(key);
  return keys;
}

}  // namespace mux
