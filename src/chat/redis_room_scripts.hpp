// The Lua scripts of RedisRoomBus (chat/redis_room_bus.hpp names the keys they use). Each runs
// atomically in Redis, which is why they exist: a step that reads and then writes (a nick claim,
// a member set and its version, a batch's ids and the stream entries under them) must not let
// another server's step in between. The bus sends them with EVAL; Redis caches them by digest.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>

namespace mux::room_scripts {

// Refreshes this server's presence, drops servers silent for longer than the TTL, and returns
// every other live server with the version of its member set and its signed registration:
// {id1, version1, registration1, id2, ...} (version "" when it has written none yet,
// registration "" without --room-secret-file). O(servers): no member names.
// KEYS: servers, my members set, versions, registrations. ARGV: my id, TTL in ms, my
// registration ("<unix ms> <version> <tag>", or "").
inline constexpr const char* kHeartbeatScript = R"lua(
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
inline constexpr const char* kMembersScript = R"lua(
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
inline constexpr const char* kSnapshotScript = R"lua(
return {redis.call('HGET', KEYS[2], ARGV[1]) or '', redis.call('SMEMBERS', KEYS[1])}
)lua";

// Whether the server holding a nick is alive, the start of kClaimScript and kReclaimScript:
// a nick held by a server that stopped refreshing its presence (SIGKILL, a cut cable) is free to
// take, one held by a live server is not. Sets `owner` (the nick's holder value when it is not
// mine), `id` (its server id) and `alive`. KEYS: the nick, servers. ARGV: my holder value (my
// id, then with --room-secret-file a space and its tag), the presence TTL in ms.
inline constexpr char kLiveHolderLua[] = R"lua(
local owner = redis.call('GET', KEYS[1])
local id, alive = nil, false
if owner and owner ~= ARGV[1] then
  id = string.match(owner, '^[^ ]*')
  local seen = redis.call('ZSCORE', KEYS[2], id)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  alive = seen and tonumber(seen) > now - tonumber(ARGV[2])
end
)lua";

// `prelude` followed by `body`, as one NUL-terminated script, at compile time.
template <std::size_t P, std::size_t B>
constexpr std::array<char, P + B - 1> with_prelude(const char (&prelude)[P],
                                                   const char (&body)[B]) {
  std::array<char, P + B - 1> script{};
  std::copy_n(prelude, P - 1, script.begin());
  std::copy_n(body, B, script.begin() + (P - 1));
  return script;
}

// Takes a nick for this server unless a live server holds it. KEYS and ARGV as
// kLiveHolderLua. Returns 1 when claimed, else the holder value found (the server checks
// its signature: Lua cannot).
inline constexpr auto kClaimScript = with_prelude(kLiveHolderLua, R"lua(
if alive then return owner end
redis.call('SET', KEYS[1], ARGV[1])
return 1
)lua");

// Takes a nick whose holder value failed verification, unless it changed meanwhile.
// KEYS: the nick. ARGV: the value found, my holder value. Returns 1 when taken.
inline constexpr const char* kOverrideScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
)lua";

// Raises the counter to ARGV[1] unless it is higher already. KEYS: the counter.
inline constexpr const char* kSeedScript = R"lua(
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
)lua";

// Releases a nick this server holds, and the proof stored for it. KEYS: the nick, proofs.
// ARGV: my holder value.
inline constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], KEYS[1])
  return redis.call('DEL', KEYS[1])
end
return 0
)lua";

// Stores the proof of the session holding a nick here, bound to this holder. KEYS: the nick,
// proofs. ARGV: my holder value, the proof.
inline constexpr const char* kProofScript = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return 1
)lua";

// kClaimScript for a reconnect with its secret: a nick that a live server holds is taken from it
// when the proof stored for it (by that holder) is ARGV[3]. Returns 1 when claimed as
// kClaimScript would, the former holder's server id when taken from it, 0 otherwise (the
// server then claims as usual). KEYS: as kLiveHolderLua, then proofs. ARGV: as kLiveHolderLua,
// then the proof.
inline constexpr auto kReclaimScript = with_prelude(kLiveHolderLua, R"lua(
if alive then
  if redis.call('HGET', KEYS[3], KEYS[1]) ~= owner .. ' ' .. ARGV[3] then return 0 end
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], KEYS[1])
  return id
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
)lua");

// Publishes a batch with messages, numbering them room-wide (issue 23): the ids counter hands
// out one id per message, the messages go to the history stream under those ids ("0-ID", so
// the stream is read by id), and the batch goes out with an "i" line (chat/room_event.hpp)
// naming its first id and the room's epoch (made here when Redis has none: it restarted empty).
// Atomic, so ids, the stream and the channel agree on one order for every server. Each entry
// also names the server that said it (field o, from the batch's header): a server catching up
// after a drop (kEpochScript) knows its own lines, which its clients had at once.
// KEYS: ids, epoch, history, epochs. ARGV: channel, batch, a fresh epoch, MAXLEN (0: no history),
// the number of messages, then per message its time, name, text and signature ("" without
// --room-secret-file; else "<nonce> <tag>", kept as the entry's field s), then the number of
// writers, their TTL in seconds and per writer its key and the last number of its messages in
// the batch ("/cap acks WRITER": the count only rises, in the same script as the messages).
inline constexpr const char* kPublishScript = R"lua(
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[2], epoch)
  redis.call('HSET', KEYS[4], 'base:' .. epoch, redis.call('GET', KEYS[1]) or '0')
end
local n = tonumber(ARGV[5])
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
if ARGV[4] ~= '0' then
  local origin = string.match(ARGV[2], '^MUXROOM1 ([^\n]+)') or ''
  for i = 0, n - 1 do
    local at = 6 + i * 4
    local id = string.format('0-%d', first + i)
    local fields = {'t', ARGV[at], 'n', ARGV[at + 1], 'm', ARGV[at + 2], 'o', origin}
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
local w = 6 + n * 4
for j = 0, tonumber(ARGV[w] or '0') - 1 do
  local at = w + 2 + j * 2
  local stored = tonumber(redis.call('GET', ARGV[at]) or '0') or 0
  if tonumber(ARGV[at + 1]) > stored then
    redis.call('SET', ARGV[at], ARGV[at + 1], 'EX', ARGV[w + 1])
  else
    redis.call('EXPIRE', ARGV[at], ARGV[w + 1])
  end
end
local f = string.format('%d', first)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. 'i 0: ' .. #f .. ':' .. f .. ' ' .. #epoch .. ':' ..
           epoch .. '\n')
return first
)lua";

// The room's epoch and its last id at (re)connect, and what this server missed meanwhile, read
// atomically so that everything after it comes through the channel (the server subscribed
// before it sent this): {epoch, last id, base, ended, entries}. A Redis with no epoch (it
// restarted empty), or one whose counter is below the ids this server has seen in that epoch
// (it restarted from an older snapshot, and would hand out ids again), gets the fresh one, and
// "base" is where its ids start (the counter when it was made). A server that knew another epoch
// raises "ended", the highest id any server saw in that one, to its own last id: the first
// server back after a restart records how far the lost history went, and the later ones count
// what they never saw of it. "entries" (an XREVRANGE answer, the newest COUNT) are the stream's
// messages after this server's last id (the same epoch) or after base (a new one), up to the
// last id. epochs holds "base:<epoch>" and "end:<epoch>". KEYS: epoch, ids, history, epochs.
// ARGV: a fresh epoch, the epoch this server knows ("": none yet), the last id it relayed there,
// COUNT (0: no entries), the highest id it knows was handed out there (its own messages are
// stored before it hears them back).
inline constexpr const char* kEpochScript = R"lua(
local epoch = redis.call('GET', KEYS[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local mine = tonumber(ARGV[5])
if (not epoch) or (epoch == ARGV[2] and last < mine) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('HSET', KEYS[4], 'base:' .. epoch, string.format('%d', last))
end
local ended = 0
if ARGV[2] ~= '' and epoch ~= ARGV[2] then
  ended = tonumber(redis.call('HGET', KEYS[4], 'end:' .. ARGV[2]) or '0') or 0
  if mine > ended then
    ended = mine
    redis.call('HSET', KEYS[4], 'end:' .. ARGV[2], string.format('%d', mine))
  end
end
local base = tonumber(redis.call('HGET', KEYS[4], 'base:' .. epoch) or '0') or 0
local from = base
if epoch == ARGV[2] then from = tonumber(ARGV[3]) end
local entries = {}
if ARGV[4] ~= '0' and last > from then
  entries = redis.call('XREVRANGE', KEYS[3], string.format('0-%d', last),
                       string.format('(0-%d', from), 'COUNT', ARGV[4])
end
return {epoch, string.format('%d', last), string.format('%d', base), string.format('%d', ended),
        entries}
)lua";

}  // namespace mux::room_scripts
