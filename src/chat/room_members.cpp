#include "chat/room_members.hpp"

#include <algorithm>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"

namespace mux {
bool RoomMembers::by_arrival(const ChatMember* a, const ChatMember* b) {
  return a->join_number_ < b->join_number_;
}

void RoomMembers::add(ChatMember& member) {
  member.slot_ = members_.size();
  members_.push_back(&member);
  who_cache_.reset();
}

void RoomMembers::remove(ChatMember& member) {
  // Swap-remove keeps leaving O(1); /who restores arrival order from join_number_.
  ChatMember* last = members_.back();
  members_[member.slot_] = last;
  last->slot_ = member.slot_;
  members_.pop_back();
  if (std::exchange(member.wants_ids_, false)) --with_ids_;
  who_cache_.reset();
}

void RoomMembers::want_ids(ChatMember& member) {
  if (!member.wants_ids_) {
    member.wants_ids_ = true;
    ++with_ids_;
  }
}

void RoomMembers::broadcast(const Block& block, const ChatMember* except) const {
  for (ChatMember* member : members_) {
    if (member != except) member->deliver(block);
  }
}

void RoomMembers::deliver_chunk(const Block& plain, const Block& with_ids, const ChatMember* sender,
                                bool numbered_later) const {
  if (with_ids_ == 0) return broadcast(plain, sender);
  for (ChatMember* member : members_) {
    if (member == sender) continue;
    if (!member->wants_ids_) {
      member->deliver(plain);
    } else if (with_ids) {
      member->deliver(with_ids);
    } else if (!numbered_later) {
      member->deliver(plain);  // lines without ids (the room's ids are out of reach)
    }
  }
}

void RoomMembers::deliver_numbered(const Block& block, std::string_view sender_name) const {
  for (ChatMember* member : members_) {
    // Its sender had its own line as it typed it (the room never sends a line back).
    if (member->wants_ids_ && member->name_ != sender_name) member->deliver(block);
  }
}

const Block& RoomMembers::who_list(const RemoteNames& remote_names) {
  if (who_cache_) return who_cache_;
  // This server's members in order of arrival, then the other servers' by name (their arrival
  // order is not known here); in a big room only the first kWhoPage of them, found without
  // sorting everyone.
  std::vector<const ChatMember*> ordered(members_.begin(), members_.end());
  std::size_t local = std::min(ordered.size(), kWhoPage);
  std::partial_sort(ordered.begin(), ordered.begin() + static_cast<std::ptrdiff_t>(local),
                    ordered.end(), by_arrival);
  std::vector<std::string_view> names;
  names.reserve(kWhoPage);
  for (std::size_t i = 0; i < local; ++i)
    names.emplace_back(ordered[i]->name_);
  std::vector<std::string> remote = remote_names();
  std::size_t from_remote = std::min(remote.size(), kWhoPage - local);
  std::partial_sort(remote.begin(), remote.begin() + static_cast<std::ptrdiff_t>(from_remote),
                    remote.end());
  for (std::size_t i = 0; i < from_remote; ++i)
    names.emplace_back(remote[i]);
  who_cache_ = make_block(chat::notice::who_page(names, members_.size() + remote.size()));
  return who_cache_;
}

std::string RoomMembers::who_matching(std::string_view text,
                                      std::vector<std::string> remote_names) const {
  std::string wanted = chat::fold_nick(text);
  auto matches = [&wanted](std::string_view name) {
    return chat::fold_nick(name).find(wanted) != std::string::npos;
  };
  std::vector<const ChatMember*> local;
  for (const ChatMember* member : members_) {
    if (matches(member->name_)) local.push_back(member);
  }
  std::sort(local.begin(), local.end(), by_arrival);
  std::vector<std::string> remote;
  for (std::string& name : remote_names) {
    if (matches(name)) remote.push_back(std::move(name));
  }
  std::sort(remote.begin(), remote.end());
  std::vector<std::string_view> names;
  for (const ChatMember* member : local) {
    if (names.size() == kWhoPage) break;
    names.emplace_back(member->name_);
  }
  for (const std::string& name : remote) {
    if (names.size() == kWhoPage) break;
    names.emplace_back(name);
  }
  return chat::notice::who_matching(text, names, local.size() + remote.size());
}

void RelayChunk::append(std::string_view name, std::string_view text, std::uint64_t id,
                        bool with_ids) {
  chat::notice::append_relay(plain_, name, text);
  if (id != 0 && with_ids) chat::append_relay_with_id(with_ids_, id, name, text);
}

RelayChunk::Taken RelayChunk::take() {
  return {std::exchange(sender_, nullptr), std::exchange(numbered_later_, false),
          std::exchange(plain_, {}), std::exchange(with_ids_, {})};
}

}  // namespace mux
