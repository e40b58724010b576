// NickChanges: how a member's nick changes in the room. /nick (checked here, then claimed
// room-wide through the bus while the member's next lines wait, so they go out under the name it
// then has), /reclaim NICK SECRET (a reconnecting client takes its nick from its old session's
// ghost without the nick ever being free room-wide), a reclaim made on another server that ends
// a ghost here, and the proof of a session's secret the bus stores with its nick.
//
// Why a class of its own: it is the room's one multi-step flow around names (check, claim, apply,
// announce), and the NickRegistry (who holds what) and ReconnectSecrets (what proves a session)
// stay pure beside it. It works on the room as its friend (the registry, the secrets, the bus,
// who hears the rename).
#pragma once

#include <string>
#include <string_view>

namespace mux {

class ChatMember;
class ChatRoom;

class NickChanges {
 public:
  explicit NickChanges(ChatRoom& room) : room_(room) {}
  NickChanges(const NickChanges&) = delete;
  NickChanges& operator=(const NickChanges&) = delete;

  // /nick NICK. `secret` (a /reclaim's): a nick held on another server by the session with this
  // secret is taken from it at once.
  void rename(ChatMember& member, std::string_view nick, std::string_view secret = {});
  // /reclaim NICK SECRET: the nick back from this session's ghost at once when SECRET is that
  // session's; otherwise it is /nick NICK.
  void reclaim(ChatMember& member, std::string_view argument);
  // RoomEvents::reclaimed_elsewhere: a session here whose secret `verifier` proves was replaced
  // by its reconnect on another server.
  void reclaimed_elsewhere(const std::string& nick, const std::string& verifier);
  // Tells the bus the proof of `member`'s secret for the nick it holds (when it has both).
  void store_proof(const ChatMember& member);

 private:
  // False (and the member told why) when another member here holds `nick` or a look-alike.
  bool free_here(ChatMember& member, std::string_view nick);
  void apply(ChatMember& member, std::string_view nick);
  // A session replaced by its reconnect (here or on another server): told, its nick handed over
  // (never released room-wide), and it leaves.
  void end_ghost(ChatMember& ghost, std::string_view reason);

  ChatRoom& room_;
};

}  // namespace mux
