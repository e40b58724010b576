#include "chat/redis_room_bus.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <random>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "core/logger.hpp"
#include "core/sanitize.hpp"

namespace mux {
namespace {

// Refreshes this server's presence, drops servers silent for longer than the TTL, and returns
// every other live server with its members: {id1, {names...}, id2, {names...}, ...}.
// KEYS: servers, my members set. ARGV: my id, TTL in ms, members key prefix.
constexpr const char* kHeartbeatScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[1] then
    table.insert(out, id)
    table.insert(out, redis.call('SMEMBERS', ARGV[3] .. id))
  end
end
return out
)lua";

// Takes a nick for ARGV[1] unless a live server holds it. KEYS: the nick, servers. ARGV: my id,
// TTL in ms. Returns 1 when claimed.
constexpr const char* kClaimScript = R"lua(
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  local seen = redis.call('ZSCORE', KEYS[2], owner)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if seen and tonumber(seen) > now - tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
)lua";

// Raises the counter to ARGV[1] unless it is higher already. KEYS: the counter.
constexpr const char* kSeedScript = R"lua(
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
)lua";

constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua";

std::string make_server_id() {
  std::random_device random;
  return fmt::format("{}-{:08x}", ::getpid(), random());
}

// One history entry out of an XREVRANGE element: [id, [field, value, ...]]. Written by another
// server, so read as peer input.
std::optional<HistoryEntry> history_entry(const RedisValue& element, std::size_t max_line) {
  if (element.elements.size() != 2) return std::nullopt;
  const auto& fields = element.elements[1].elements;
  HistoryEntry entry;
  bool has_name = false;
  bool has_text = false;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
    const std::string& field = fields[i].text;
    const std::string& value = fields[i + 1].text;
    if (field == "t") {
      std::from_chars(value.data(), value.data() + value.size(), entry.unix_seconds);
    } else if (field == "n" && chat::acceptable_remote_name(value)) {
      entry.name = value;
      has_name = true;
    } else if (field == "m") {
      entry.text =
          chat::sanitize(std::string_view(value).substr(0, max_line), value.size() > max_line);
      has_text = !entry.text.empty();
    }
  }
  if (!has_name || !has_text) return std::nullopt;
  return entry;
}

}  // namespace

RedisRoomBus::RedisRoomBus(EventLoop& loop, Logger& logger, ChatRoom& room, RedisUrl url,
                           const TlsClientConfig& tls, const std::string& room_name,
                           std::size_t history_limit, std::size_t max_line,
                           chat::RemoteLimits limits)
    : loop_(loop),
      logger_(logger),
      room_(room),
      server_id_(make_server_id()),
      room_name_(room_name),
      prefix_(fmt::format("mux:room:{}:", room_name)),
      history_limit_(history_limit),
      max_line_(max_line),
      link_(
          loop, std::move(url), prefix_ + "events",
          RedisLink::Handlers{[this] { on_up(); }, [this](const std::string& why) { on_down(why); },
                              [this](std::string_view payload) { on_message(payload); },
                              [this](const std::string& why) { on_attempt_failed(why); }},
          tls),
      flood_gate_(limits) {}

RedisRoomBus::~RedisRoomBus() {
  *alive_ = false;
  loop_.cancel_timer(heartbeat_timer_);
}

void RedisRoomBus::start() {
  logger_.info("redis: room '{}' on {} (this server: {})", room_name_, link_.url().describe(),
               server_id_);
  link_.start();
}

void RedisRoomBus::on_up() {
  told_failure_ = false;
  logger_.info("redis: connected to {}", link_.url().describe());
  // Re-sync: this server's members and nicks as they are now (they may have changed while
  // Redis was out of reach, or Redis may have restarted empty).
  // Before any newcomer's INCR (commands keep their order): numbers in use here or seen on the
  // other servers before an outage are never handed out again.
  std::uint64_t seed = std::max(room_.highest_number(), highest_remote_number_);
  link_.command({"EVAL", kSeedScript, "1", key("clients"), std::to_string(seed)});
  std::string members = key("members:") + server_id_;
  link_.command({"DEL", members});
  std::vector<std::string> names = room_.local_names();
  if (!names.empty()) {
    std::vector<std::string> add{"SADD", members};
    add.insert(add.end(), names.begin(), names.end());
    link_.command(add);
  }
  for (const std::string& nick_key : room_.local_nick_keys()) {
    link_.command({"EVAL", kClaimScript, "2", key("nick:") + nick_key, key("servers"), server_id_,
                   std::to_string(kPresenceTtl.count())},
                  [this, nick_key](const RedisValue* reply) {
                    if (reply != nullptr && reply->integer == 0)
                      logger_.info("redis: a nick held here was taken elsewhere meanwhile");
                  });
  }
  heartbeat();
  heartbeat_timer_ = loop_.add_periodic(kHeartbeat, [this] { heartbeat(); });
  if (!reachable_) {
    reachable_ = true;
    room_.bus_reachable(true);
  }
}

void RedisRoomBus::on_down(const std::string& why) {
  // `why` names the address already ("127.0.0.1:6379/0: no reply for 3000 ms").
  logger_.info("redis: lost {}; the room goes on here, reconnecting", why);
  told_failure_ = true;
  loop_.cancel_timer(std::exchange(heartbeat_timer_, 0));
  batch_.clear();
  remote_.clear();
  room_.remote_members_changed();
  if (reachable_) {
    reachable_ = false;
    room_.bus_reachable(false);
  }
}

void RedisRoomBus::on_attempt_failed(const std::string& why) {
  if (!told_failure_) {
    logger_.info("redis: cannot reach {}; retrying", why);
    told_failure_ = true;
  }
  if (reachable_) {
    reachable_ = false;
    room_.bus_reachable(false);
  }
}

void RedisRoomBus::publish(const chat::RoomEvent& event) {
  if (!link_.up() || finishing_) return;
  std::string members = key("members:") + server_id_;
  // The member set changes before the event goes out, so a server that hears the event and
  // then reads the set sees the change.
  switch (event.kind) {
    case chat::RoomEventKind::joined:
      link_.command({"SADD", members, event.name});
      break;
    case chat::RoomEventKind::left:
      link_.command({"SREM", members, event.name});
      break;
    case chat::RoomEventKind::renamed:
      link_.command({"SREM", members, event.name});
      link_.command({"SADD", members, event.text});
      break;
    case chat::RoomEventKind::message:
      if (history_limit_ != 0) {
        link_.command({"XADD", key("history"), "MAXLEN", "~", std::to_string(history_limit_), "*",
                       "t",
                       std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count()),
                       "n", event.name, "m", event.text});
      }
      break;
  }
  chat::encode_room_event(batch_, server_id_, event);
  if (batch_.size() >= kMaxBatchBytes) return flush();
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    loop_.defer([this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.lock()) flush();
    });
  }
}

void RedisRoomBus::flush() {
  flush_scheduled_ = false;
  if (batch_.empty()) return;
  link_.publish(batch_);
  batch_.clear();
}

void RedisRoomBus::on_message(std::string_view payload) {
  if (payload.size() > kMaxMessageBytes) {
    // One line per second at most: whoever sends them could otherwise flood the log instead.
    ++oversized_dropped_;
    auto now = EventLoop::Clock::now();
    if (now - oversized_logged_ >= std::chrono::seconds(1)) {
      logger_.info("redis: dropped an oversized room message ({} bytes; {} since the last report)",
                   payload.size(), std::exchange(oversized_dropped_, 0));
      oversized_logged_ = now;
    }
    return;
  }
  std::optional<chat::RoomBatch> batch = chat::decode_room_events(payload, max_line_);
  if (!batch) {
    logger_.info("redis: dropped a malformed room message ({} bytes): \"{}\"", payload.size(),
                 log_field(payload, 60));
    return;
  }
  if (batch->server_id == server_id_) return;
  ++batches_seen_[batch->server_id];
  std::vector<std::string>& names = remote_[batch->server_id];
  for (const chat::RoomEvent& event : batch->events) {
    note_remote_name(event.name);
    if (event.kind == chat::RoomEventKind::renamed) note_remote_name(event.text);
    auto found = std::find(names.begin(), names.end(), event.name);
    switch (event.kind) {
      case chat::RoomEventKind::joined:
        if (found == names.end()) names.push_back(event.name);
        break;
      case chat::RoomEventKind::left:
        if (found != names.end()) names.erase(found);
        break;
      case chat::RoomEventKind::renamed:
        if (found != names.end()) *found = event.text;
        break;
      case chat::RoomEventKind::message:
        break;
    }
  }
  drop_floods(*batch);
  if (!batch->events.empty()) room_.apply_remote(batch->events);
}

void RedisRoomBus::drop_floods(chat::RoomBatch& batch) {
  auto now = chat::RemoteFloodGate::Clock::now();
  std::erase_if(batch.events, [&](const chat::RoomEvent& event) {
    std::size_t bytes = event.name.size() + event.text.size() + 1;
    auto verdict = flood_gate_.admit(batch.server_id, event.name, bytes, now);
    if (verdict == chat::RemoteFloodGate::Verdict::first_drop) {
      logger_.info("redis: {} on server {} sends too fast: dropping its lines", event.name,
                   batch.server_id);
    }
    return verdict != chat::RemoteFloodGate::Verdict::pass;
  });
}

void RedisRoomBus::heartbeat() {
  flood_gate_.forget_idle(chat::RemoteFloodGate::Clock::now());
  link_.command({"EVAL", kHeartbeatScript, "2", key("servers"), key("members:") + server_id_,
                 server_id_, std::to_string(kPresenceTtl.count()), key("members:")},
                [this, alive = std::weak_ptr<bool>(alive_),
                 batches_then = batches_seen_](const RedisValue* reply) {
                  if (alive.lock() && reply != nullptr && !reply->is_error())
                    apply_presence(*reply, batches_then);
                });
}

void RedisRoomBus::apply_presence(
    const RedisValue& reply, const std::unordered_map<std::string, std::uint64_t>& batches_then) {
  std::unordered_map<std::string, std::vector<std::string>> live;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2) {
    std::vector<std::string>& names = live[reply.elements[i].text];
    for (const RedisValue& name : reply.elements[i + 1].elements) {
      if (chat::acceptable_remote_name(name.text)) {
        note_remote_name(name.text);
        names.push_back(name.text);
      }
    }
  }
  // A server that stopped refreshing its presence is gone: its members leave for everyone here.
  std::vector<chat::RoomEvent> gone;
  for (const auto& [id, names] : remote_) {
    if (live.contains(id)) continue;
    if (!names.empty()) logger_.info("redis: server {} is gone with {} clients", id, names.size());
    for (const std::string& name : names)
      gone.push_back({chat::RoomEventKind::left, name, "server gone", {}, false});
  }
  // A live server whose events arrived after this reply was asked for: those events are newer
  // than the member list read here (it could lack a member who just joined), so its list as
  // the events built it stays. The next heartbeat, with no event in between, corrects any drift.
  for (auto& [id, names] : live) {
    auto known = remote_.find(id);
    auto then = batches_then.find(id);
    std::uint64_t before = then == batches_then.end() ? 0 : then->second;
    if (known != remote_.end() && batches_seen_[id] != before) names = known->second;
  }
  std::erase_if(batches_seen_, [&live](const auto& entry) { return !live.contains(entry.first); });
  remote_ = std::move(live);
  if (!gone.empty()) room_.apply_remote(gone);
  room_.remote_members_changed();
}

void RedisRoomBus::admit(std::size_t history, AdmitCallback done) {
  auto shared_done = std::make_shared<AdmitCallback>(std::move(done));
  auto admission = std::make_shared<Admission>();
  bool sent = link_.command({"INCR", key("clients")}, [admission](const RedisValue* reply) {
    if (reply != nullptr && reply->type == RedisValue::Type::integer && reply->integer > 0)
      admission->number = static_cast<std::uint64_t>(reply->integer);
  });
  auto finish = [shared_done, admission](bool ok) {
    if (!ok || admission->number == 0) return (*shared_done)(std::nullopt);
    (*shared_done)(std::move(*admission));
  };
  if (!sent) return finish(false);
  if (history == 0 || history_limit_ == 0) {
    // Replies come in order: a PING after the INCR answers once the number is known.
    if (!link_.command({"PING"}, [finish](const RedisValue* reply) { finish(reply != nullptr); }))
      finish(false);
    return;
  }
  bool asked =
      link_.command({"XREVRANGE", key("history"), "+", "-", "COUNT", std::to_string(history)},
                    [this, finish, admission](const RedisValue* reply) {
                      if (reply == nullptr) return finish(false);
                      for (auto it = reply->elements.rbegin(); it != reply->elements.rend(); ++it) {
                        if (auto entry = history_entry(*it, max_line_))
                          admission->history.push_back(*entry);
                      }
                      finish(true);
                    });
  if (!asked) finish(false);
}

void RedisRoomBus::claim_nick(const std::string& nick_key, ClaimCallback done) {
  bool sent = link_.command({"EVAL", kClaimScript, "2", key("nick:") + nick_key, key("servers"),
                             server_id_, std::to_string(kPresenceTtl.count())},
                            [done](const RedisValue* reply) {
                              if (reply == nullptr || reply->type != RedisValue::Type::integer)
                                return done(std::nullopt);
                              done(reply->integer == 1);
                            });
  if (!sent) done(std::nullopt);
}

void RedisRoomBus::release_nick(const std::string& nick_key) {
  if (finishing_) return;
  link_.command({"EVAL", kReleaseScript, "1", key("nick:") + nick_key, server_id_});
}

void RedisRoomBus::note_remote_name(std::string_view name) {
  if (auto number = chat::default_name_number(name))
    highest_remote_number_ = std::max(highest_remote_number_, *number);
}

std::vector<std::string> RedisRoomBus::remote_names() const {
  std::vector<std::string> names;
  for (const auto& [id, server_names] : remote_)
    names.insert(names.end(), server_names.begin(), server_names.end());
  return names;
}

void RedisRoomBus::finish(std::function<void()> done) {
  flush();
  if (!link_.up()) return done();
  finishing_ = true;
  loop_.cancel_timer(std::exchange(heartbeat_timer_, 0));
  link_.command({"DEL", key("members:") + server_id_});
  link_.command({"ZREM", key("servers"), server_id_});
  if (!link_.command({"PING"}, [done](const RedisValue*) { done(); })) done();
}

}  // namespace mux
