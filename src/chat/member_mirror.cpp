#include "chat/member_mirror.hpp"

#include <algorithm>

#include "chat/room_bus.hpp"
#include "core/base/logger.hpp"

namespace mux {

MemberMirror::MemberMirror(Logger& logger, std::chrono::milliseconds presence_ttl, AskSnapshot ask)
    : logger_(logger), presence_ttl_(presence_ttl), ask_(std::move(ask)) {}

MemberMirror::Server& MemberMirror::server(const std::string& id, Clock::time_point now) {
  auto [it, added] = servers_.try_emplace(id);
  if (added) {
    it->second.last_heard = now;
    request_snapshot(id, it->second);
  }
  return it->second;
}

void MemberMirror::request_snapshot(const std::string& id, Server& server) {
  if (server.snapshot_pending) return;
  server.snapshot_pending = true;
  server.heard_meanwhile.clear();
  if (in_flight_ >= kMaxSnapshotsInFlight) {
    turns_.push_back(id);
    return;
  }
  ask(id, server);
}

void MemberMirror::ask(const std::string& id, Server& server) {
  if (ask_(id)) {
    server.snapshot_asked = true;
    ++in_flight_;
  } else {
    // Out of reach: not synced, so the heartbeat after the link is back asks again.
    server.snapshot_pending = false;
  }
}

void MemberMirror::answered() {
  if (in_flight_ > 0) --in_flight_;
  while (in_flight_ < kMaxSnapshotsInFlight && !turns_.empty()) {
    std::string id = std::move(turns_.front());
    turns_.pop_front();
    auto it = servers_.find(id);
    // Gone meanwhile, or already asked for (an id may wait twice when it left and came back).
    if (it == servers_.end() || !it->second.snapshot_pending || it->second.snapshot_asked) continue;
    ask(id, it->second);
  }
}

void MemberMirror::heard(const std::string& id, const std::vector<chat::RoomEvent>& events,
                         std::optional<std::uint64_t> members_version, Clock::time_point now) {
  Server& from = server(id, now);
  from.last_heard = now;
  std::uint64_t changes = 0;
  for (const chat::RoomEvent& event : events)
    changes += event.kind != chat::RoomEventKind::message ? 1 : 0;
  // The version of the batch's first membership event; 0: not versioned (or nonsense).
  std::uint64_t next = 0;
  if (members_version && *members_version >= changes) next = *members_version - changes + 1;
  for (const chat::RoomEvent& event : events) {
    if (event.kind == chat::RoomEventKind::message) continue;
    note_name(event.name);
    if (event.kind == chat::RoomEventKind::renamed) note_name(event.text);
    apply(id, from, next, event);
    if (next != 0) ++next;
  }
  // A "v" line ahead of what the events brought: pub/sub delivers a server's batches in order,
  // so the changes that led to it were lost (the heartbeat's batch shows a lost tail).
  if (members_version && from.synced && !from.snapshot_pending && from.version < *members_version) {
    from.synced = false;
    request_snapshot(id, from);
  }
}

bool MemberMirror::snapshot(const std::string& id, std::optional<std::uint64_t> version,
                            const std::vector<std::string_view>& names) {
  bool changed = accept_snapshot(id, version, names);
  answered();  // last: the next ask may reuse what `id` and `names` refer to
  return changed;
}

bool MemberMirror::accept_snapshot(const std::string& id, std::optional<std::uint64_t> version,
                                   const std::vector<std::string_view>& names) {
  auto it = servers_.find(id);
  if (it == servers_.end() || !it->second.snapshot_asked) return false;  // gone meanwhile
  Server& server = it->second;
  server.snapshot_pending = false;
  server.snapshot_asked = false;
  auto heard = std::exchange(server.heard_meanwhile, {});
  if (!version) return false;
  server.names.clear();
  for (std::string_view name : names) {
    if (!chat::acceptable_remote_name(name)) continue;
    note_name(name);
    server.names.insert(std::string(name));
  }
  server.version = *version;
  server.synced = true;
  // What was heard while the snapshot travelled and is newer than it.
  for (auto& [event_version, event] : heard)
    apply(id, server, event_version, event);
  return true;
}

void MemberMirror::snapshot_failed(const std::string& id) {
  if (auto it = servers_.find(id); it != servers_.end() && it->second.snapshot_asked) {
    it->second.snapshot_pending = false;
    it->second.snapshot_asked = false;
  }
  answered();
}

void MemberMirror::change_names(Server& server, const chat::RoomEvent& event) {
  switch (event.kind) {
    case chat::RoomEventKind::joined:
      server.names.insert(event.name);
      break;
    case chat::RoomEventKind::left:
      server.names.erase(event.name);
      break;
    case chat::RoomEventKind::renamed:
      if (server.names.erase(event.name) != 0) server.names.insert(event.text);
      break;
    case chat::RoomEventKind::message:
      break;
  }
}

void MemberMirror::apply(const std::string& id, Server& server, std::uint64_t version,
                         const chat::RoomEvent& event) {
  if (version == 0) return change_names(server, event);
  if (server.snapshot_pending) {
    // Applied now (the list is best effort until the snapshot comes), and again on top of the
    // snapshot when it is newer.
    change_names(server, event);
    if (server.heard_meanwhile.size() < kMaxHeardMeanwhile)
      server.heard_meanwhile.emplace_back(version, event);
    return;
  }
  if (server.synced && version <= server.version) return;  // in the snapshot already
  change_names(server, event);
  if (server.synced && version == server.version + 1) {
    server.version = version;
    return;
  }
  // A gap: some change was lost on the way.
  server.synced = false;
  request_snapshot(id, server);
}

std::vector<chat::RoomEvent> MemberMirror::presence(
    const std::unordered_map<std::string, std::uint64_t>& live, Clock::time_point now) {
  // A server that stopped refreshing its presence is gone: its members leave for everyone here.
  // One never listed yet (its events came before its first heartbeat was read) gets the TTL.
  std::vector<chat::RoomEvent> gone;
  std::erase_if(servers_, [&](auto& entry) {
    auto& [id, server] = entry;
    if (live.contains(id) || (!server.was_live && now - server.last_heard < presence_ttl_))
      return false;
    if (!server.names.empty())
      logger_.info("redis: server {} is gone with {} clients", id, server.names.size());
    server.names.for_each([&](std::string_view name) {
      gone.push_back({chat::RoomEventKind::left, std::string(name), "server gone", {}, false});
    });
    return true;
  });
  for (const auto& entry : live) {
    Server& listed = server(entry.first, now);
    listed.was_live = true;
    // A snapshot that failed (or was never asked, Redis out of reach) is asked again. A synced
    // server is never re-read here, whatever version Redis holds for it: its events and its
    // heartbeat's "v" line decide (see the header).
    if (!listed.synced) request_snapshot(entry.first, listed);
  }
  return gone;
}

void MemberMirror::reconnected(Clock::time_point now) {
  for (auto& [id, server] : servers_) {
    server.was_live = false;
    server.last_heard = now;
  }
}

void MemberMirror::note_name(std::string_view name) {
  if (auto number = chat::default_name_number(name); number && *number < RoomBus::kOwnNumbersFrom)
    highest_number_ = std::max(highest_number_, *number);
}

std::vector<std::string> MemberMirror::names() const {
  std::vector<std::string> names;
  names.reserve(count());
  for (const auto& [id, server] : servers_)
    server.names.for_each([&](std::string_view name) { names.emplace_back(name); });
  return names;
}

std::size_t MemberMirror::count() const {
  std::size_t count = 0;
  for (const auto& [id, server] : servers_)
    count += server.names.size();
  return count;
}

}  // namespace mux
