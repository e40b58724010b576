#include "chat/redis_room_bus.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <random>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "core/base/logger.hpp"
#include "core/base/sanitize.hpp"

namespace mux {
namespace {

// Refreshes this server's presence, drops servers silent for longer than the TTL, and returns
// every other live server with the version of its member set and its signed registration:
// {id1, version1, registration1, id2, ...} (version "" when it has written none yet,
// registration "" without --room-secret-file). O(servers): no member names.
// KEYS: servers, my members set, versions, registrations. ARGV: my id, TTL in ms, my
// registration ("<unix ms> <version> <tag>", or "").
constexpr const char* kHeartbeatScript = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[1], ARGV[3]) end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if id ~= ARGV[1] then
    table.insert(out, id)
    table.insert(out, redis.call('HGET', KEYS[3], id) or '')
    table.insert(out, redis.call('HGET', KEYS[4], id) or '')
  end
end
return out
)lua";

// Applies one batch's member changes and records the version they lead to, atomically.
// KEYS: my members set, versions. ARGV: my id, version, TTL in ms, "1" to start from an empty
// set (a re-sync), then "+NAME" (joined) or "-NAME" (left) in order.
constexpr const char* kMembersScript = R"lua(
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) end
for i = 5, #ARGV do
  local op = ARGV[i]
  if string.sub(op, 1, 1) == '+' then
    redis.call('SADD', KEYS[1], string.sub(op, 2))
  else
    redis.call('SREM', KEYS[1], string.sub(op, 2))
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
)lua";

// One server's member set and the version it is at, read atomically: {version or "", {names}}.
// KEYS: its members set, versions. ARGV: its id.
constexpr const char* kSnapshotScript = R"lua(
return {redis.call('HGET', KEYS[2], ARGV[1]) or '', redis.call('SMEMBERS', KEYS[1])}
)lua";

// Takes a nick for ARGV[1] unless a live server holds it. KEYS: the nick, servers. ARGV: my
// holder value (my id, then with --room-secret-file a space and its tag), TTL in ms. Returns 1
// when claimed, else the holder value found (the server checks its signature: Lua cannot).
constexpr const char* kClaimScript = R"lua(
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  local id = string.match(owner, '^[^ ]*')
  local seen = redis.call('ZSCORE', KEYS[2], id)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if seen and tonumber(seen) > now - tonumber(ARGV[2]) then return owner end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
)lua";

// Takes a nick whose holder value failed verification, unless it changed meanwhile.
// KEYS: the nick. ARGV: the value found, my holder value. Returns 1 when taken.
constexpr const char* kOverrideScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
)lua";

// Raises the counter to ARGV[1] unless it is higher already. KEYS: the counter.
constexpr const char* kSeedScript = R"lua(
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
)lua";

// Releases a nick this server holds, and the proof stored for it. KEYS: the nick, proofs.
// ARGV: my holder value.
constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], KEYS[1])
  return redis.call('DEL', KEYS[1])
end
return 0
)lua";

// Stores the proof of the session holding a nick here, bound to this holder. KEYS: the nick,
// proofs. ARGV: my holder value, the proof.
constexpr const char* kProofScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return 1
)lua";

// kClaimScript for a reconnect with its secret: a nick that a live server holds is taken from it
// when the proof stored for it (by that holder) is ARGV[3]. Returns 1 when claimed as
// kClaimScript would, the former holder's server id when taken from it, 0 otherwise (the
// server then claims as usual). KEYS: the nick, servers, proofs. ARGV: my holder value, TTL in
// ms, the proof.
constexpr const char* kReclaimScript = R"lua(
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  local id = string.match(owner, '^[^ ]*')
  local seen = redis.call('ZSCORE', KEYS[2], id)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if seen and tonumber(seen) > now - tonumber(ARGV[2]) then
    if redis.call('HGET', KEYS[3], KEYS[1]) ~= owner .. ' ' .. ARGV[3] then return 0 end
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[3], KEYS[1])
    return id
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
)lua";

// Publishes a batch with messages, numbering them room-wide (issue 23): the ids counter hands
// out one id per message, the messages go to the history stream under those ids ("0-ID", so
// the stream is read by id), and the batch goes out with an "i" line (chat/room_event.hpp)
// naming its first id and the room's epoch (made here when Redis has none: it restarted empty).
// Atomic, so ids, the stream and the channel agree on one order for every server.
// KEYS: ids, epoch, history. ARGV: channel, batch, a fresh epoch, MAXLEN (0: no history), the
// number of messages, then per message its time, name, text and signature ("" without
// --room-secret-file; else "<nonce> <tag>", kept as the entry's field s).
constexpr const char* kPublishScript = R"lua(
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
end
local n = tonumber(ARGV[5])
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
if ARGV[4] ~= '0' then
  for i = 0, n - 1 do
    local at = 6 + i * 4
    local id = string.format('0-%d', first + i)
    local fields = {'t', ARGV[at], 'n', ARGV[at + 1], 'm', ARGV[at + 2]}
    if ARGV[at + 3] ~= '' then
      table.insert(fields, 's')
      table.insert(fields, ARGV[at + 3])
    end
    local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id, unpack(fields))
    if type(added) == 'table' and added.err then
      -- A stream not numbered by id (an older mux wrote it): started again.
      redis.call('DEL', KEYS[3])
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id, unpack(fields))
    end
  end
end
local f = string.format('%d', first)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. 'i 0: ' .. #f .. ':' .. f .. ' ' .. #epoch .. ':' ..
           epoch .. '\n')
return first
)lua";

// The room's epoch and its last id, at (re)connect: {epoch, last id}. A Redis with no epoch
// (it restarted empty), or one whose counter is below the ids this server has seen in that
// epoch (it restarted from an older snapshot, and would hand out ids again), gets the fresh one.
// KEYS: epoch, ids. ARGV: a fresh epoch, the epoch this server knows, its last id there.
constexpr const char* kEpochScript = R"lua(
local epoch = redis.call('GET', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if (not epoch) or (epoch == ARGV[2] and last < tonumber(ARGV[3])) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return {epoch, string.format('%d', last)}
)lua";

std::string make_epoch() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

// With a secret: a batch from a server not heard in this long is a replay, whatever it says (its
// sequence number is the sender's clock in microseconds, or a little past it); a server heard
// from is remembered twice as long, so its old batches stay refused after it went quiet.
constexpr std::chrono::minutes kReplayWindow{5};
constexpr std::chrono::minutes kForgetServerAfter{2 * kReplayWindow};
// A signed server registration is taken for this long after it was written: it is rewritten at
// every heartbeat, and the servers' clocks may differ by up to this much.
constexpr std::chrono::seconds kRegistrationWindow{60};

std::uint64_t unix_microseconds() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::string make_server_id() {
  std::random_device random;
  return fmt::format("{}-{:08x}", ::getpid(), random());
}

// The value of field `name` in an XREVRANGE element [id, [field, value, ...]] (its first, when
// a writer other than kPublishScript repeated it); empty when it is missing.
std::string_view stream_field(const RedisValue& element, std::string_view name) {
  const auto& fields = element.elements[1].elements;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2)
    if (fields[i].text == name) return fields[i + 1].text;
  return {};
}

// One history entry out of an XREVRANGE element. Written by another server, so read as peer
// input.
std::optional<HistoryEntry> history_entry(const RedisValue& element, std::size_t max_line) {
  if (element.elements.size() != 2) return std::nullopt;
  HistoryEntry entry;
  // Its id: the stream numbers messages "0-ID" (kPublishScript).
  if (std::string_view id = element.elements[0].text; id.starts_with("0-"))
    std::from_chars(id.data() + 2, id.data() + id.size(), entry.id);
  std::string_view time = stream_field(element, "t");
  std::from_chars(time.data(), time.data() + time.size(), entry.unix_seconds);
  std::string_view name = stream_field(element, "n");
  std::string_view text = stream_field(element, "m");
  if (!chat::acceptable_remote_name(name)) return std::nullopt;
  entry.name = std::string(name);
  entry.text = chat::sanitize(text.substr(0, max_line), text.size() > max_line);
  if (entry.text.empty()) return std::nullopt;
  return entry;
}

}  // namespace

RedisRoomBus::RedisRoomBus(EventLoop& loop, Logger& logger, RoomEvents& room, RedisUrl url,
                           const TlsClientConfig& tls, const std::string& room_name,
                           std::size_t history_limit, std::size_t max_line,
                           chat::RemoteLimits limits, std::optional<MessageMac> mac)
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
      flood_gate_(limits),
      mac_(std::move(mac)) {}

RedisRoomBus::~RedisRoomBus() {
  *alive_ = false;
  loop_.cancel_timer(heartbeat_timer_);
  loop_.cancel_timer(start_timer_);
}

void RedisRoomBus::start() {
  logger_.info("redis: room '{}' on {} (this server: {})", room_name_, link_.url().describe(),
               server_id_);
  start_timer_ = loop_.add_timer(kStartWait, [this] {
    start_timer_ = 0;
    end_starting(false);
  });
  link_.start();
}

void RedisRoomBus::end_starting(bool up) {
  if (!starting_) return;
  starting_ = false;
  loop_.cancel_timer(std::exchange(start_timer_, 0));
  for (Waiting& waiting : std::exchange(waiting_for_start_, {})) {
    if (up) {
      admit(waiting.history, std::move(waiting.done));
    } else {
      waiting.done(std::nullopt);
    }
  }
}

void RedisRoomBus::on_up() {
  told_failure_ = false;
  logger_.info("redis: connected to {}", link_.url().describe());
  // Re-sync: this server's members and nicks as they are now (they may have changed while
  // Redis was out of reach, or Redis may have restarted empty).
  // Before any newcomer's INCR (commands keep their order): numbers in use here or seen on the
  // other servers before an outage are never handed out again.
  std::uint64_t seed = std::max(room_.highest_number(), highest_remote_number_);
  // Numbers given on our own meanwhile: the other servers may have given some too, higher ones
  // in the same window that this server has not heard of yet: the counter goes past the window.
  if (!outage_slot_) {
    // Once per server: its residue for numbers given out of reach (see outage_number()).
    link_.command({"INCR", key("slots")},
                  [this, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                    if (alive.lock() && reply != nullptr &&
                        reply->type == RedisValue::Type::integer && reply->integer > 0)
                      outage_slot_ = static_cast<std::uint64_t>(reply->integer) % kOutageStride;
                  });
  }
  // Numbers still in hand were reserved in a Redis that may have restarted empty since, where
  // another server may be handed them: they are dropped.
  next_number_ = spare_next_ = 1;
  block_end_ = spare_end_ = 0;
  link_.command({"EVAL", kSeedScript, "1", key("clients"), std::to_string(seed)});
  // The room's epoch and ids: the same on every server, so a client recovers on any of them.
  link_.command({"EVAL", kEpochScript, "2", key("epoch"), key("ids"), make_epoch(), room_.epoch(),
                 std::to_string(room_.last_id())},
                [this, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                  if (!alive.lock() || reply == nullptr || reply->elements.size() != 2) return;
                  std::uint64_t last = 0;
                  const std::string& text = reply->elements[1].text;
                  std::from_chars(text.data(), text.data() + text.size(), last);
                  room_.room_epoch(reply->elements[0].text, last);
                });
  publish_all_members();
  for (const std::string& nick_key : room_.local_nick_keys()) {
    claim_nick(nick_key, [this, alive = std::weak_ptr<bool>(alive_)](std::optional<bool> claimed) {
      if (alive.lock() && claimed == false)
        logger_.info("redis: a nick held here was taken elsewhere meanwhile");
    });
  }
  // After the claims (commands keep their order): the proofs need the nick to be ours.
  for (const auto& [nick_key, proof] : room_.local_nick_proofs())
    set_nick_proof(nick_key, proof);
  heartbeat();
  heartbeat_timer_ = loop_.add_periodic(kHeartbeat, [this] { heartbeat(); });
  if (!reachable_) {
    reachable_ = true;
    room_.bus_reachable(true);
  }
  // After the seed and the epoch (commands keep their order): their numbers are the room's.
  end_starting(true);
}

void RedisRoomBus::on_down(const std::string& why) {
  // `why` names the address already ("127.0.0.1:6379/0: no reply for 3000 ms").
  logger_.info("redis: lost {}; the room goes on here, reconnecting", why);
  told_failure_ = true;
  end_starting(false);
  loop_.cancel_timer(std::exchange(heartbeat_timer_, 0));
  batch_.clear();
  member_ops_.clear();
  // Never sent: relayed on this server only.
  if (std::size_t unsent = messages_.size() / 3; unsent != 0) room_.messages_stored(0, unsent);
  messages_.clear();
  batch_changes_members_ = false;
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
  end_starting(false);
  if (reachable_) {
    reachable_ = false;
    room_.bus_reachable(false);
  }
}

std::vector<std::string> RedisRoomBus::members_script_call(bool from_empty) const {
  return {"EVAL",
          kMembersScript,
          "2",
          key("members:") + server_id_,
          key("versions"),
          server_id_,
          signed_version(),
          std::to_string(kPresenceTtl.count()),
          from_empty ? "1" : "0"};
}

void RedisRoomBus::publish_all_members() {
  // A new version with no event: the others see the gap (their version falls behind the one a
  // heartbeat reads) and take a snapshot, whatever changed here while Redis was away.
  ++version_;
  std::vector<std::string> args = members_script_call(true);
  for (std::string& name : room_.local_names())
    args.push_back("+" + member_entry(name));
  link_.command(args);
}

void RedisRoomBus::publish(const chat::RoomEvent& event) {
  if (!link_.up() || finishing_) return;
  // Each membership event is one version step; members:<id> gets the same changes (in flush,
  // before the batch goes out), so a server that hears the events and then reads the set sees
  // them.
  switch (event.kind) {
    case chat::RoomEventKind::joined:
      member_ops_.push_back("+" + member_entry(event.name));
      break;
    case chat::RoomEventKind::left:
      member_ops_.push_back("-" + member_entry(event.name));
      break;
    case chat::RoomEventKind::renamed:
      member_ops_.push_back("-" + member_entry(event.name));
      member_ops_.push_back("+" + member_entry(event.text));
      break;
    case chat::RoomEventKind::message:
      // Numbered, kept and published with the batch (kPublishScript).
      messages_.push_back(std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count()));
      messages_.push_back(event.name);
      messages_.push_back(event.text);
      break;
  }
  if (event.kind != chat::RoomEventKind::message) {
    ++version_;
    batch_changes_members_ = true;
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

void RedisRoomBus::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  loop_.defer([this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.lock()) flush();
  });
}

void RedisRoomBus::flush() {
  flush_scheduled_ = false;
  if (batch_.empty()) return;
  if (batch_changes_members_) {
    std::vector<std::string> args = members_script_call(false);
    args.insert(args.end(), std::make_move_iterator(member_ops_.begin()),
                std::make_move_iterator(member_ops_.end()));
    link_.command(args);
    chat::encode_members_version(batch_, server_id_, version_);
  }
  if (mac_) {
    last_sequence_ = std::max(last_sequence_ + 1, unix_microseconds());
    std::string sequence = std::to_string(last_sequence_);
    chat::encode_signature(batch_, last_sequence_,
                           mac_->tag({room_name_, "batch", batch_, sequence}));
  }
  member_ops_.clear();
  batch_changes_members_ = false;
  if (messages_.empty()) {
    link_.publish(batch_);
  } else {
    std::vector<std::string> args{"EVAL",
                                  kPublishScript,
                                  "3",
                                  key("ids"),
                                  key("epoch"),
                                  key("history"),
                                  key("events"),
                                  std::move(batch_),
                                  make_epoch(),
                                  std::to_string(history_limit_),
                                  std::to_string(messages_.size() / 3)};
    args.reserve(args.size() + messages_.size() / 3 * 4);
    for (std::size_t i = 0; i + 2 < messages_.size(); i += 3) {
      std::string signature;
      if (mac_) {
        // Unique per message (this batch's sequence number and its place), so a copy of an
        // entry under another id is told apart when read back.
        std::string nonce = fmt::format("{}.{}.{}", server_id_, last_sequence_, i / 3);
        std::string tag = mac_->tag(
            {room_name_, "history", nonce, messages_[i], messages_[i + 1], messages_[i + 2]});
        signature = nonce + " " + tag;
      }
      args.push_back(std::move(messages_[i]));
      args.push_back(std::move(messages_[i + 1]));
      args.push_back(std::move(messages_[i + 2]));
      args.push_back(std::move(signature));
    }
    std::size_t count = messages_.size() / 3;
    // The answer (the first id, or a failure when Redis went away) acknowledges the senders.
    link_.command(
        args, [this, count, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
          if (!alive.lock()) return;
          bool stored =
              reply != nullptr && reply->type == RedisValue::Type::integer && reply->integer > 0;
          room_.messages_stored(stored ? static_cast<std::uint64_t>(reply->integer) : 0, count);
        });
    messages_.clear();
  }
  batch_.clear();
}

RedisRoomBus::Remote& RedisRoomBus::remote(const std::string& id) {
  auto [it, added] = remote_.try_emplace(id);
  if (added) {
    it->second.last_heard = EventLoop::Clock::now();
    request_snapshot(id, it->second);
  }
  return it->second;
}

void RedisRoomBus::request_snapshot(const std::string& id, Remote& server) {
  if (server.snapshot_pending) return;
  server.snapshot_pending = true;
  server.heard_meanwhile.clear();
  bool sent =
      link_.command({"EVAL", kSnapshotScript, "2", key("members:") + id, key("versions"), id},
                    [this, id, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                      if (!alive.lock()) return;
                      if (reply == nullptr || reply->is_error()) {
                        // Asked again at the next heartbeat (it is not synced).
                        if (auto it = remote_.find(id); it != remote_.end())
                          it->second.snapshot_pending = false;
                        return;
                      }
                      apply_snapshot(id, *reply);
                    });
  if (!sent) server.snapshot_pending = false;
}

void RedisRoomBus::apply_snapshot(const std::string& id, const RedisValue& reply) {
  auto it = remote_.find(id);
  if (it == remote_.end()) return;  // gone meanwhile
  Remote& server = it->second;
  server.snapshot_pending = false;
  auto heard = std::exchange(server.heard_meanwhile, {});
  std::uint64_t version = 0;
  if (reply.elements.size() != 2) return;
  std::string_view text = reply.elements[0].text;
  if (mac_ && !text.empty()) {
    // "VERSION TAG"
    auto space = text.find(' ');
    if (space == std::string_view::npos ||
        !mac_->verify({room_name_, "version", id, text.substr(0, space)}, text.substr(space + 1))) {
      report_unverified("a member-set version", id);
      return;  // not synced: its events alone build its list, and the heartbeat asks again
    }
    text = text.substr(0, space);
  }
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
    // It has written no version (not a chat-server, or gone): its events alone build its list,
    // and the heartbeat decides whether it is alive.
    return;
  }
  server.names.clear();
  for (const RedisValue& entry : reply.elements[1].elements) {
    std::string_view name = entry.text;
    if (mac_) {
      // "TAG NAME"
      if (name.size() <= MessageMac::kTagChars || name[MessageMac::kTagChars] != ' ' ||
          !mac_->verify({room_name_, "member", id, name.substr(MessageMac::kTagChars + 1)},
                        name.substr(0, MessageMac::kTagChars))) {
        report_unverified("a member entry", id);
        continue;
      }
      name.remove_prefix(MessageMac::kTagChars + 1);
    }
    if (chat::acceptable_remote_name(name)) {
      note_remote_name(name);
      server.names.insert(std::string(name));
    }
  }
  server.version = version;
  server.synced = true;
  // What was heard while the snapshot travelled and is newer than it.
  for (auto& [event_version, event] : heard)
    apply_member_event(id, server, event_version, event);
  room_.remote_members_changed();
}

void RedisRoomBus::change_names(Remote& server, const chat::RoomEvent& event) {
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

void RedisRoomBus::apply_member_event(const std::string& id, Remote& server, std::uint64_t version,
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
  if (mac_ && !verified(*batch, payload)) return;
  if (!batch->epoch.empty()) room_.batch_epoch(batch->epoch, batch->events);
  if (batch->server_id == server_id_) {
    // Our own batch back from Redis, numbered: its messages reach the local members that asked
    // for ids now, in the room's order (the others had them at once).
    room_.own_messages_numbered(batch->events);
    return;
  }
  for (const chat::NickReclaim& reclaim : batch->reclaims) {
    // A session of ours taken over by its reconnect there: the room checks the verifier.
    if (reclaim.owner == server_id_) room_.reclaimed_elsewhere(reclaim.nick, reclaim.verifier);
  }
  Remote& server = remote(batch->server_id);
  server.last_heard = EventLoop::Clock::now();
  std::uint64_t changes = 0;
  for (const chat::RoomEvent& event : batch->events)
    changes += event.kind != chat::RoomEventKind::message ? 1 : 0;
  // The version of the batch's first membership event; 0: not versioned (or nonsense).
  std::uint64_t next = 0;
  if (batch->members_version && *batch->members_version >= changes)
    next = *batch->members_version - changes + 1;
  for (const chat::RoomEvent& event : batch->events) {
    if (event.kind == chat::RoomEventKind::message) continue;
    note_remote_name(event.name);
    if (event.kind == chat::RoomEventKind::renamed) note_remote_name(event.text);
    apply_member_event(batch->server_id, server, next, event);
    if (next != 0) ++next;
  }
  drop_floods(*batch);
  if (!batch->events.empty()) room_.apply_remote(batch->events);
}

bool RedisRoomBus::verified(const chat::RoomBatch& batch, std::string_view payload) {
  if (!batch.sequence) {
    report_unverified("an unsigned room message", batch.server_id);
    return false;
  }
  std::string sequence = std::to_string(*batch.sequence);
  if (!mac_->verify({room_name_, "batch", payload.substr(0, batch.signed_bytes), sequence},
                    batch.tag)) {
    report_unverified("a room message with a wrong signature", batch.server_id);
    return false;
  }
  auto now = EventLoop::Clock::now();
  auto [it, added] = verified_servers_.try_emplace(batch.server_id);
  Heard& heard = it->second;
  std::uint64_t window =
      static_cast<std::uint64_t>(std::chrono::microseconds(kReplayWindow).count());
  bool fresh =
      added ? *batch.sequence + window >= unix_microseconds() : *batch.sequence > heard.sequence;
  if (!fresh) {
    if (added) verified_servers_.erase(it);
    report_unverified("a replayed room message", batch.server_id);
    return false;
  }
  heard.sequence = *batch.sequence;
  heard.at = now;
  return true;
}

void RedisRoomBus::report_unverified(std::string_view what, std::string_view detail) {
  ++unverified_dropped_;
  auto now = EventLoop::Clock::now();
  if (now - unverified_logged_ < std::chrono::seconds(1)) return;
  logger_.warn(
      "redis: dropped {} (from \"{}\"; {} since the last report): it failed verification; is "
      "--room-secret-file the same on every server of room '{}'?",
      what, log_field(detail, 64), std::exchange(unverified_dropped_, 0), room_name_);
  unverified_logged_ = now;
}

void RedisRoomBus::drop_floods(chat::RoomBatch& batch) {
  auto now = chat::RemoteFloodGate::Clock::now();
  // Joins, leaves and renames cost a delivery to everyone only while the room announces them;
  // beyond that they change the member list alone (and are never dropped: a huge room would
  // otherwise fill the gate with every newcomer and then drop real lines).
  bool announced = room_.announces(room_.size() + remote_count());
  std::erase_if(batch.events, [&](const chat::RoomEvent& event) {
    if (event.kind != chat::RoomEventKind::message && !announced) return false;
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
  std::erase_if(verified_servers_, [now = EventLoop::Clock::now()](const auto& entry) {
    return now - entry.second.at > kForgetServerAfter;
  });
  std::string registration;
  if (mac_) {
    // Signed with the version this server is at: the member changes that lead to it went out on
    // this link before, so Redis holds them when it runs this.
    std::string millis = std::to_string(unix_microseconds() / 1000);
    std::string version = std::to_string(version_);
    registration = fmt::format("{} {} {}", millis, version,
                               mac_->tag({room_name_, "server", server_id_, millis, version}));
  }
  link_.command({"EVAL", kHeartbeatScript, "4", key("servers"), key("members:") + server_id_,
                 key("versions"), key("registrations"), server_id_,
                 std::to_string(kPresenceTtl.count()), std::move(registration)},
                [this, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                  if (alive.lock() && reply != nullptr && !reply->is_error())
                    apply_presence(*reply);
                });
}

std::optional<std::uint64_t> RedisRoomBus::registered_version(const std::string& id,
                                                              std::string_view registration) {
  // "<unix ms> <version> <tag>", signed by a server of the room, and recent: a registration
  // copied from a server that stopped is refused once it is kRegistrationWindow old.
  auto first = registration.find(' ');
  auto second = first == registration.npos ? first : registration.find(' ', first + 1);
  if (second == registration.npos) {
    report_unverified("a server registration without a signature", id);
    return std::nullopt;
  }
  std::string_view millis = registration.substr(0, first);
  std::string_view version_text = registration.substr(first + 1, second - first - 1);
  if (!mac_->verify({room_name_, "server", id, millis, version_text},
                    registration.substr(second + 1))) {
    report_unverified("a server registration with a wrong signature", id);
    return std::nullopt;
  }
  std::uint64_t at = 0;
  std::uint64_t version = 0;
  std::from_chars(millis.data(), millis.data() + millis.size(), at);
  std::from_chars(version_text.data(), version_text.data() + version_text.size(), version);
  auto window = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(kRegistrationWindow).count());
  if (at + window < unix_microseconds() / 1000) {
    report_unverified("a stale server registration", id);
    return std::nullopt;
  }
  return version;
}

void RedisRoomBus::apply_presence(const RedisValue& reply) {
  auto now = EventLoop::Clock::now();
  std::unordered_map<std::string, std::uint64_t> live;  // id -> version (0: none yet)
  for (std::size_t i = 0; i + 2 < reply.elements.size(); i += 3) {
    const std::string& id = reply.elements[i].text;
    if (!chat::valid_server_id(id)) continue;
    const std::string& text = reply.elements[i + 1].text;
    std::uint64_t version = 0;
    std::from_chars(text.data(), text.data() + text.size(), version);
    if (mac_) {
      // With a secret, a listed server counts only with a registration it signed: anyone can
      // write an id into the servers set, only a server of the room can sign (and its version is
      // the signed one).
      auto registered = registered_version(id, reply.elements[i + 2].text);
      if (!registered) continue;
      version = *registered;
      // Listed and signed: its batches stay checked against its last sequence number.
      if (auto known = verified_servers_.find(id); known != verified_servers_.end())
        known->second.at = now;
    }
    live[id] = version;
  }
  if (live_servers_ != live.size() + 1)
    logger_.info("redis: {} servers in the room", live.size() + 1);
  live_servers_ = live.size() + 1;
  // A server that stopped refreshing its presence is gone: its members leave for everyone here.
  // One never listed yet (its events came before its first heartbeat was read) gets the TTL.
  std::vector<chat::RoomEvent> gone;
  std::erase_if(remote_, [&](auto& entry) {
    auto& [id, server] = entry;
    if (live.contains(id) || (!server.was_live && now - server.last_heard < kPresenceTtl))
      return false;
    if (!server.names.empty())
      logger_.info("redis: server {} is gone with {} clients", id, server.names.size());
    server.names.for_each([&](std::string_view name) {
      gone.push_back({chat::RoomEventKind::left, std::string(name), "server gone", {}, false});
    });
    return true;
  });
  for (const auto& [id, version] : live) {
    Remote& server = remote(id);
    server.was_live = true;
    // Its version in Redis a heartbeat ago has not been reached by its events since: the last
    // ones were lost (with nothing after them to show the gap).
    bool behind = server.synced && server.version < server.claimed;
    if ((behind || !server.synced) && !server.snapshot_pending) {
      server.synced = false;
      request_snapshot(id, server);
    }
    server.claimed = version;
  }
  if (!gone.empty()) room_.apply_remote(gone);
  room_.remote_members_changed();
}

void RedisRoomBus::admit(std::size_t history, AdmitCallback done) {
  if (!link_.up() && starting_) {
    waiting_for_start_.push_back({history, std::move(done)});
    return;
  }
  if (!link_.up()) return done(std::nullopt);
  if (numbers_in_hand() == 0 || !waiting_.empty()) {
    waiting_.push_back({history, std::move(done)});
    return request_numbers();
  }
  std::uint64_t number = take_number();
  // Busy: the next block is asked for before this one runs out.
  if (block_size_ > 1 && numbers_in_hand() < block_size_ / 2) request_numbers();
  admit_with(number, history, std::move(done));
}

void RedisRoomBus::replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) {
  if (!link_.up() || history_limit_ == 0 || up_to <= after) return done(std::nullopt);
  bool asked = link_.command(
      // The newest --history of the range (the stream may hold a few more: MAXLEN ~).
      {"XREVRANGE", key("history"), fmt::format("0-{}", up_to), fmt::format("(0-{}", after),
       "COUNT", std::to_string(history_limit_)},
      [this, done, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;  // the bus (and the room it answers) is gone
        if (reply == nullptr || reply->type != RedisValue::Type::array) return done(std::nullopt);
        std::vector<HistoryEntry> entries;
        std::unordered_set<std::string> nonces;
        for (auto it = reply->elements.rbegin(); it != reply->elements.rend(); ++it) {
          const RedisValue& element = *it;
          // In id order, each once: anything else did not come from kPublishScript.
          auto entry = read_history(element, nonces);
          if (entry && entry->id != 0 && (entries.empty() || entry->id > entries.back().id))
            entries.push_back(std::move(*entry));
        }
        done(std::move(entries));
      });
  if (!asked) done(std::nullopt);
}

void RedisRoomBus::admit_with(std::uint64_t number, std::size_t history, AdmitCallback done) {
  if (history == 0 || history_limit_ == 0) return done(Admission{number, {}});
  bool asked =
      link_.command({"XREVRANGE", key("history"), "+", "-", "COUNT", std::to_string(history)},
                    [this, number, done](const RedisValue* reply) {
                      if (reply == nullptr) return done(std::nullopt);
                      Admission admission{number, {}};
                      std::unordered_set<std::string> nonces;
                      for (auto it = reply->elements.rbegin(); it != reply->elements.rend(); ++it) {
                        if (auto entry = read_history(*it, nonces))
                          admission.history.push_back(*entry);
                      }
                      done(std::move(admission));
                    });
  if (!asked) done(std::nullopt);
}

std::optional<HistoryEntry> RedisRoomBus::read_history(const RedisValue& element,
                                                       std::unordered_set<std::string>& nonces) {
  if (element.elements.size() != 2) return std::nullopt;
  if (mac_) {
    const std::string& id = element.elements[0].text;
    std::string_view signature = stream_field(element, "s");
    auto space = signature.find(' ');
    if (space == std::string_view::npos) {
      report_unverified("an unsigned history entry", id);
      return std::nullopt;
    }
    std::string_view nonce = signature.substr(0, space);
    if (!mac_->verify({room_name_, "history", nonce, stream_field(element, "t"),
                       stream_field(element, "n"), stream_field(element, "m")},
                      signature.substr(space + 1))) {
      report_unverified("a history entry with a wrong signature", id);
      return std::nullopt;
    }
    if (!nonces.emplace(nonce).second) {
      report_unverified("a copied history entry", id);
      return std::nullopt;
    }
  }
  return history_entry(element, max_line_);
}

std::optional<std::uint64_t> RedisRoomBus::outage_number() {
  if (numbers_in_hand() > 0) return take_number();
  if (!outage_slot_) return std::nullopt;
  std::uint64_t number = std::max(last_outage_number_ + 1, kOwnNumbersFrom);
  number += (*outage_slot_ + kOutageStride - number % kOutageStride) % kOutageStride;
  last_outage_number_ = number;
  return number;
}

std::uint64_t RedisRoomBus::take_number() {
  if (block_end_ + 1 == next_number_) {
    next_number_ = std::exchange(spare_next_, 1);
    block_end_ = std::exchange(spare_end_, 0);
  }
  return next_number_++;
}

void RedisRoomBus::request_numbers() {
  if (numbers_requested_) return;
  auto now = EventLoop::Clock::now();
  if (now - numbers_requested_at_ > std::chrono::seconds(1))
    block_size_ = std::max<std::uint64_t>(1, block_size_ / 2);
  numbers_requested_at_ = now;
  std::uint64_t size = block_size_;
  numbers_requested_ =
      link_.command({"INCRBY", key("clients"), std::to_string(size)},
                    [this, size, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                      if (alive.lock()) on_numbers(reply, size);
                    });
  if (!numbers_requested_) on_numbers(nullptr, size);
}

void RedisRoomBus::on_numbers(const RedisValue* reply, std::uint64_t size) {
  numbers_requested_ = false;
  if (reply == nullptr || reply->type != RedisValue::Type::integer ||
      reply->integer < static_cast<long long>(size)) {
    // Redis is out of reach (or answers nonsense): whoever waits gets a local number.
    for (Waiting& waiting : std::exchange(waiting_, {}))
      waiting.done(std::nullopt);
    return;
  }
  auto end = static_cast<std::uint64_t>(reply->integer);
  if (block_end_ + 1 == next_number_) {
    next_number_ = end - size + 1;
    block_end_ = end;
  } else {
    spare_next_ = end - size + 1;
    spare_end_ = end;
  }
  while (!waiting_.empty() && numbers_in_hand() > 0) {
    Waiting waiting = std::move(waiting_.front());
    waiting_.pop_front();
    admit_with(take_number(), waiting.history, std::move(waiting.done));
  }
  // Joins come faster than one block per round trip: ask for twice as many next time.
  if (!waiting_.empty() || numbers_in_hand() < block_size_ / 2) {
    if (!waiting_.empty()) block_size_ = std::min(block_size_ * 2, kMaxNumberBlock);
    if (!waiting_.empty() || block_size_ > 1) request_numbers();
  }
}

std::string RedisRoomBus::member_entry(std::string_view name) const {
  if (!mac_) return std::string(name);
  return fmt::format("{} {}", mac_->tag({room_name_, "member", server_id_, name}), name);
}

std::string RedisRoomBus::signed_version() const {
  std::string version = std::to_string(version_);
  if (!mac_) return version;
  return fmt::format("{} {}", version, mac_->tag({room_name_, "version", server_id_, version}));
}

std::string RedisRoomBus::nick_holder(const std::string& nick_key) const {
  if (!mac_) return server_id_;
  return server_id_ + " " + mac_->tag({room_name_, "nick", nick_key, server_id_});
}

void RedisRoomBus::claim_nick(const std::string& nick_key, ClaimCallback done) {
  bool sent = link_.command(
      {"EVAL", kClaimScript, "2", key("nick:") + nick_key, key("servers"), nick_holder(nick_key),
       std::to_string(kPresenceTtl.count())},
      [this, nick_key, done, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock() || reply == nullptr) return done(std::nullopt);
        if (reply->type == RedisValue::Type::integer) return done(reply->integer == 1);
        if (reply->type != RedisValue::Type::string) return done(std::nullopt);
        // Held by a live server, says Redis; with a secret, only if that server signed it.
        if (!mac_ || holder_verified(nick_key, reply->text)) return done(false);
        report_unverified("a nick holder", reply->text);
        bool asked =
            link_.command({"EVAL", kOverrideScript, "1", key("nick:") + nick_key, reply->text,
                           nick_holder(nick_key)},
                          [done](const RedisValue* taken) {
                            if (taken == nullptr || taken->type != RedisValue::Type::integer)
                              return done(std::nullopt);
                            done(taken->integer == 1);
                          });
        if (!asked) done(std::nullopt);
      });
  if (!sent) done(std::nullopt);
}

bool RedisRoomBus::holder_verified(const std::string& nick_key, std::string_view holder) const {
  auto space = holder.find(' ');
  if (space == std::string_view::npos) return false;
  return mac_->verify({room_name_, "nick", nick_key, holder.substr(0, space)},
                      holder.substr(space + 1));
}

void RedisRoomBus::release_nick(const std::string& nick_key) {
  if (finishing_) return;
  link_.command(
      {"EVAL", kReleaseScript, "2", key("nick:") + nick_key, key("proofs"), nick_holder(nick_key)});
}

void RedisRoomBus::set_nick_proof(const std::string& nick_key, const std::string& proof) {
  if (!link_.up() || finishing_) return;
  link_.command({"EVAL", kProofScript, "2", key("nick:") + nick_key, key("proofs"),
                 nick_holder(nick_key), proof});
}

void RedisRoomBus::reclaim_nick(const std::string& nick_key, const std::string& nick,
                                const std::string& proof, const std::string& verifier,
                                ClaimCallback done) {
  bool sent = link_.command(
      {"EVAL", kReclaimScript, "3", key("nick:") + nick_key, key("servers"), key("proofs"),
       nick_holder(nick_key), std::to_string(kPresenceTtl.count()), proof},
      [this, nick_key, nick, verifier, done,
       alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;
        if (reply == nullptr) return done(std::nullopt);
        if (reply->type == RedisValue::Type::string && chat::valid_server_id(reply->text)) {
          // Taken from the server holding its ghost: that server ends the ghost once it has
          // checked the verifier against the ghost's secret. Published before the rename that
          // follows (same batch), so everyone hears the ghost go first.
          logger_.info("redis: {} taken back from its previous connection on server {}", nick,
                       reply->text);
          chat::encode_reclaim(batch_, server_id_, {nick, reply->text, verifier});
          schedule_flush();
          return done(true);
        }
        if (reply->type != RedisValue::Type::integer) return done(std::nullopt);
        if (reply->integer == 1) return done(true);
        // No proof matched: an ordinary claim (which also overrides a holder that a
        // --room-secret-file room cannot verify).
        claim_nick(nick_key, done);
      });
  if (!sent) done(std::nullopt);
}

void RedisRoomBus::note_remote_name(std::string_view name) {
  if (auto number = chat::default_name_number(name); number && *number < kOwnNumbersFrom)
    highest_remote_number_ = std::max(highest_remote_number_, *number);
}

std::vector<std::string> RedisRoomBus::remote_names() const {
  std::vector<std::string> names;
  names.reserve(remote_count());
  for (const auto& [id, server] : remote_)
    server.names.for_each([&](std::string_view name) { names.emplace_back(name); });
  return names;
}

std::size_t RedisRoomBus::remote_count() const {
  std::size_t count = 0;
  for (const auto& [id, server] : remote_)
    count += server.names.size();
  return count;
}

void RedisRoomBus::finish(std::function<void()> done) {
  flush();
  if (!link_.up()) return done();
  finishing_ = true;
  loop_.cancel_timer(std::exchange(heartbeat_timer_, 0));
  link_.command({"DEL", key("members:") + server_id_});
  link_.command({"ZREM", key("servers"), server_id_});
  link_.command({"HDEL", key("versions"), server_id_});
  link_.command({"HDEL", key("registrations"), server_id_});
  if (!link_.command({"PING"}, [done](const RedisValue*) { done(); })) done();
}

}  // namespace mux
