#include "chat/nick_changes.hpp"

#include <optional>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "core/base/logger.hpp"
#include "core/base/sanitize.hpp"

namespace mux {

void NickChanges::reclaim(ChatMember& member, std::string_view argument) {
  std::optional<chat::Reclaim> wanted = chat::parse_reclaim(argument);
  if (!wanted) return room_.send_to(member, chat::notice::reclaim_usage());
  ChatMember* holder = room_.nicks_.holder(wanted->nick);
  // Not held here: maybe by this session's ghost on another server of the room.
  if (holder == nullptr) return rename(member, wanted->nick, wanted->secret);
  if (holder == &member) return rename(member, wanted->nick);
  ChatMember& ghost = *holder;
  // Only the exact nick, held by a session that is not waiting on the bus, with its secret.
  if (ghost.name_ != wanted->nick || !room_.secrets_.proves(ghost.id_, wanted->secret) ||
      ghost.admitting_ || ghost.claiming_ || ghost.holds_lines()) {
    return rename(member, wanted->nick);
  }
  room_.logger_.info("{} takes back {} from its previous connection", member.name_, ghost.name_);
  // The nick passes from the ghost to its successor here, never released room-wide meanwhile
  // (another server could claim it in between).
  end_ghost(ghost, "replaced by its reconnect");
  apply(member, wanted->nick);
}

void NickChanges::reclaimed_elsewhere(const std::string& nick, const std::string& verifier) {
  if (room_.closing_) return;
  ChatMember* holder = room_.nicks_.holder(nick);
  if (holder == nullptr) return;  // gone meanwhile
  ChatMember& ghost = *holder;
  // Redis is an untrusted peer: only the holder's own secret ends its session.
  if (ghost.name_ != nick || !room_.secrets_.verified_by(ghost.id_, verifier)) {
    room_.logger_.info("redis: refused a reclaim of {} that does not prove its session's secret",
                       log_field(nick));
    return;
  }
  room_.logger_.info("{} was taken back by its reconnect on another server", ghost.name_);
  // The nick is the other server's already: freed here only.
  end_ghost(ghost, "replaced by its reconnect on another server");
}

void NickChanges::end_ghost(ChatMember& ghost, std::string_view reason) {
  room_.send_to(ghost, chat::notice::replaced());
  room_.nicks_.hand_over(ghost.name_);
  ghost.has_nick_ = false;
  room_.leave_now(ghost, reason, false);
  ghost.close_after_output();
}

void NickChanges::store_proof(const ChatMember& member) {
  if (!member.has_nick_) return;
  std::string_view secret = room_.secrets_.of(member.id_);
  if (secret.empty()) return;
  room_.bus_->set_nick_proof(room_.nicks_.key(member.name_), ReconnectSecrets::proof_of(secret));
}

void NickChanges::rename(ChatMember& member, std::string_view nick, std::string_view secret) {
  if (nick.empty()) return room_.send_to(member, chat::notice::nick_usage());
  NickRegistry& nicks = room_.nicks_;
  std::optional<std::string> problem = nicks.problem(nick);
  if (problem) return room_.send_to(member, chat::notice::nick_invalid(nick, *problem));
  if (member.has_nick_ && member.name_ == nick)
    return room_.send_to(member, chat::notice::nick_unchanged(nick));
  if (!free_here(member, nick)) return;
  std::string key = nicks.key(nick);
  bool own_look_alike = member.has_nick_ && nicks.key(member.name_) == key;
  if (!room_.bus_->connected() || own_look_alike) return apply(member, nick);
  // Room-wide: the nick must also be free on every other server (claimed in Redis). Its next
  // lines wait for the answer, so they go out under the name it then has.
  member.claiming_ = true;
  RoomBus::ClaimCallback claimed_then = [this, id = member.id_, nick = std::string(nick),
                                         key](std::optional<bool> claimed) {
    auto it = room_.by_id_.find(id);
    if (it == room_.by_id_.end() || !it->second->in_room_) {
      room_.nicks_.abandon_claim(key, claimed.value_or(false));
      return;
    }
    ChatMember& claimer = *it->second;
    claimer.claiming_ = false;
    if (claimed.has_value() && !*claimed) {
      room_.logger_.info("{} cannot be {}: taken on another server", claimer.name_, nick);
      room_.send_to(claimer, chat::notice::nick_taken(nick));
    } else if (free_here(claimer, nick)) {
      // (Another client here may have taken it while the claim travelled.)
      apply(claimer, nick);
    }
    room_.release_held(claimer);
  };
  if (chat::valid_secret(secret)) {
    nicks.reclaim(key, std::string(nick), ReconnectSecrets::proof_of(secret),
                  ReconnectSecrets::verifier_of(secret), std::move(claimed_then));
  } else {
    nicks.claim(key, std::move(claimed_then));
  }
}

bool NickChanges::free_here(ChatMember& member, std::string_view nick) {
  const ChatMember* holder = room_.nicks_.holder(nick);
  // A member may change its own nick into a look-alike of itself (case, accents).
  if (holder == nullptr || holder == &member) return true;
  if (chat::fold_nick(holder->name_) == chat::fold_nick(nick)) {
    room_.send_to(member, chat::notice::nick_taken(nick));
  } else {
    room_.send_to(member, chat::notice::nick_look_alike(nick, holder->name_));
  }
  return false;
}

void NickChanges::apply(ChatMember& member, std::string_view nick) {
  room_.nicks_.take(member,
                    member.has_nick_ ? std::optional<std::string_view>(member.name_) : std::nullopt,
                    nick);
  std::string old_name = std::exchange(member.name_, std::string(nick));
  member.has_nick_ = true;
  store_proof(member);
  room_.members_.names_changed();
  room_.logger_.info("{} is now {}", old_name, member.name_);
  room_.bus_->publish({chat::RoomEventKind::renamed, old_name, member.name_, {}, false});
  std::string text = chat::notice::renamed(old_name, member.name_);
  if (room_.announces(room_.everyone())) {
    room_.broadcast(std::move(text), nullptr);
  } else {
    room_.send_to(member, std::move(text));
  }
}

}  // namespace mux
