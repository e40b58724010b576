// WriterLedger: how many messages of each writer the room has stored (issue 23, "/cap acks
// WRITER"), by the writer's key (a digest of the key the client made, so the key itself is kept
// nowhere). A reconnecting client is told this count and sends again only what comes after it;
// a message numbered at or below it (a resend whose first copy, still unread on the connection
// the client replaced, reached the room after all) is not relayed twice. Bounded: past
// kMaxWriters the writer entered longest ago is forgotten (its client, if it ever comes back,
// is told 0 and sends again what it has not seen confirmed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mux::chat {

class WriterLedger {
 public:
  static constexpr std::size_t kMaxWriters = 1 << 16;

  // The last number stored for `key`; 0 when unknown.
  [[nodiscard]] std::uint64_t last(const std::string& key) const {
    auto it = last_.find(key);
    return it == last_.end() ? 0 : it->second;
  }
  // Message `number` of `key` is about to be stored: false when it (or a later one) already is.
  bool accept(const std::string& key, std::uint64_t number) {
    auto [it, added] = last_.try_emplace(key, 0);
    if (added) {
      order_.push_back(key);
      if (order_.size() > kMaxWriters) {
        last_.erase(order_.front());
        order_.pop_front();
        it = last_.find(key);
      }
    }
    if (number <= it->second) return false;
    it->second = number;
    return true;
  }
  // What another server of the room stored (read from Redis): never goes back.
  void learn(const std::string& key, std::uint64_t stored) {
    if (stored > last(key)) accept(key, stored);
  }

 private:
  std::unordered_map<std::string, std::uint64_t> last_;
  std::deque<std::string> order_;  // keys by first entry, the oldest first
};

}  // namespace mux::chat
