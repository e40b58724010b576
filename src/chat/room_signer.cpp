#include "chat/room_signer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "core/base/logger.hpp"
#include "core/base/sanitize.hpp"

namespace mux {
namespace {

std::uint64_t unix_microseconds() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

RoomSigner::RoomSigner(Logger& logger, std::string room_name, std::string server_id,
                       std::optional<MessageMac> mac)
    : logger_(logger),
      room_name_(std::move(room_name)),
      server_id_(std::move(server_id)),
      mac_(std::move(mac)) {}

std::string RoomSigner::member_entry(std::string_view name) const {
  if (!mac_) return std::string(name);
  return fmt::format("{} {}", mac_->tag({room_name_, "member", server_id_, name}), name);
}

std::string RoomSigner::version(std::uint64_t version) const {
  std::string text = std::to_string(version);
  if (!mac_) return text;
  return fmt::format("{} {}", text, mac_->tag({room_name_, "version", server_id_, text}));
}

std::string RoomSigner::nick_holder(std::string_view nick_key) const {
  if (!mac_) return server_id_;
  return server_id_ + " " + mac_->tag({room_name_, "nick", nick_key, server_id_});
}

std::string RoomSigner::registration(std::uint64_t version) const {
  if (!mac_) return {};
  std::string millis = std::to_string(unix_microseconds() / 1000);
  std::string text = std::to_string(version);
  return fmt::format("{} {} {}", millis, text,
                     mac_->tag({room_name_, "server", server_id_, millis, text}));
}

void RoomSigner::sign_batch(std::string& batch) {
  if (!mac_) return;
  last_sequence_ = std::max(last_sequence_ + 1, unix_microseconds());
  chat::encode_signature(batch, last_sequence_,
                         mac_->tag({room_name_, "batch", batch, std::to_string(last_sequence_)}));
}

std::string RoomSigner::history_signature(std::size_t index, std::string_view time,
                                          std::string_view name, std::string_view text) const {
  if (!mac_) return {};
  // Unique per message (the batch's sequence number and its place in it), so a copy of an entry
  // under another id is told apart when read back.
  std::string nonce = fmt::format("{}.{}.{}", server_id_, last_sequence_, index);
  std::string tag = mac_->tag({room_name_, "history", nonce, time, name, text});
  return nonce + " " + tag;
}

bool RoomSigner::batch_verified(const chat::RoomBatch& batch, std::string_view payload) {
  if (!mac_) return true;
  if (!batch.sequence) {
    report("an unsigned room message", batch.server_id);
    return false;
  }
  if (!mac_->verify({room_name_, "batch", payload.substr(0, batch.signed_bytes),
                     std::to_string(*batch.sequence)},
                    batch.tag)) {
    report("a room message with a wrong signature", batch.server_id);
    return false;
  }
  auto [it, added] = heard_.try_emplace(batch.server_id);
  Heard& heard = it->second;
  auto window = static_cast<std::uint64_t>(std::chrono::microseconds(kReplayWindow).count());
  // A sender not heard before: its sequence number must be recent by the clock (it is its
  // clock); one heard before: newer than its last.
  bool fresh =
      added ? *batch.sequence + window >= unix_microseconds() : *batch.sequence > heard.sequence;
  if (!fresh) {
    if (added) heard_.erase(it);
    report("a replayed room message", batch.server_id);
    return false;
  }
  heard.sequence = *batch.sequence;
  heard.at = Clock::now();
  return true;
}

bool RoomSigner::history_verified(std::string_view id, std::string_view signature,
                                  std::string_view time, std::string_view name,
                                  std::string_view text, std::unordered_set<std::string>& nonces) {
  if (!mac_) return true;
  auto space = signature.find(' ');
  if (space == std::string_view::npos) {
    report("an unsigned history entry", id);
    return false;
  }
  std::string_view nonce = signature.substr(0, space);
  if (!mac_->verify({room_name_, "history", nonce, time, name, text},
                    signature.substr(space + 1))) {
    report("a history entry with a wrong signature", id);
    return false;
  }
  if (!nonces.emplace(nonce).second) {
    report("a copied history entry", id);
    return false;
  }
  return true;
}

std::optional<std::string_view> RoomSigner::member_name(std::string_view id,
                                                        std::string_view entry) {
  if (!mac_) return entry;
  // "TAG NAME"
  if (entry.size() <= MessageMac::kTagChars || entry[MessageMac::kTagChars] != ' ' ||
      !mac_->verify({room_name_, "member", id, entry.substr(MessageMac::kTagChars + 1)},
                    entry.substr(0, MessageMac::kTagChars))) {
    report("a member entry", id);
    return std::nullopt;
  }
  return entry.substr(MessageMac::kTagChars + 1);
}

std::optional<std::string_view> RoomSigner::version_text(std::string_view id,
                                                         std::string_view value) {
  // An empty value is no version at all (the server has written none), signed or not.
  if (!mac_ || value.empty()) return value;
  // "VERSION TAG"
  auto space = value.find(' ');
  if (space == std::string_view::npos ||
      !mac_->verify({room_name_, "version", id, value.substr(0, space)}, value.substr(space + 1))) {
    report("a member-set version", id);
    return std::nullopt;
  }
  return value.substr(0, space);
}

bool RoomSigner::holder_verified(std::string_view nick_key, std::string_view holder) {
  if (!mac_) return true;
  auto space = holder.find(' ');
  if (space != std::string_view::npos &&
      mac_->verify({room_name_, "nick", nick_key, holder.substr(0, space)},
                   holder.substr(space + 1)))
    return true;
  report("a nick holder", holder);
  return false;
}

std::optional<std::uint64_t> RoomSigner::listed_version(const std::string& id,
                                                        std::string_view version_value,
                                                        std::string_view registration) {
  std::uint64_t version = 0;
  if (!mac_) {
    // "" when it has written none yet: 0.
    std::from_chars(version_value.data(), version_value.data() + version_value.size(), version);
    return version;
  }
  // Anyone can write an id into the servers set; only a server of the room can sign its
  // registration. "<unix ms> <version> <tag>", recent: a registration copied from a server that
  // stopped is refused once it is kRegistrationWindow old.
  auto first = registration.find(' ');
  auto second = first == registration.npos ? first : registration.find(' ', first + 1);
  if (second == registration.npos) {
    report("a server registration without a signature", id);
    return std::nullopt;
  }
  std::string_view millis = registration.substr(0, first);
  std::string_view text = registration.substr(first + 1, second - first - 1);
  if (!mac_->verify({room_name_, "server", id, millis, text}, registration.substr(second + 1))) {
    report("a server registration with a wrong signature", id);
    return std::nullopt;
  }
  std::uint64_t at = 0;
  std::from_chars(millis.data(), millis.data() + millis.size(), at);
  std::from_chars(text.data(), text.data() + text.size(), version);
  auto window = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(kRegistrationWindow).count());
  if (at + window < unix_microseconds() / 1000) {
    report("a stale server registration", id);
    return std::nullopt;
  }
  // Listed and signed: its batches stay checked against its last sequence number.
  if (auto known = heard_.find(id); known != heard_.end()) known->second.at = Clock::now();
  return version;
}

void RoomSigner::forget_quiet(Clock::time_point now) {
  std::erase_if(heard_,
                [now](const auto& entry) { return now - entry.second.at > kForgetServerAfter; });
}

void RoomSigner::report(std::string_view what, std::string_view detail) {
  ++dropped_;
  auto now = Clock::now();
  if (now - logged_ < std::chrono::seconds(1)) return;
  logger_.warn(
      "redis: dropped {} (from \"{}\"; {} since the last report): it failed verification; is "
      "--room-secret-file the same on every server of room '{}'?",
      what, log_field(detail, 64), std::exchange(dropped_, 0), room_name_);
  logged_ = now;
}

}  // namespace mux
