#include "chat/redis_room_bus.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <random>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "chat/history_stream.hpp"
#include "chat/redis_room_scripts.hpp"
#include "core/base/logger.hpp"
#include "core/base/sanitize.hpp"

namespace mux {
namespace {

std::string make_epoch() {
  std::random_device random;
  return fmt::format("{:08x}{:08x}", random(), random());
}

std::string make_server_id() {
  std::random_device random;
  return fmt::format("{}-{:08x}", ::getpid(), random());
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
      signer_(logger, room_name, server_id_, std::move(mac)),
      outgoing_(server_id_, signer_),
      nick_claims_(link_, logger, signer_, prefix_, kPresenceTtl,
                   [this](chat::NickReclaim reclaim) {
                     outgoing_.add_reclaim(reclaim);
                     schedule_flush();
                   }),
      mirror_(logger, kPresenceTtl,
              [this](const std::string& id) { return request_snapshot(id); }) {}

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
  std::uint64_t seed = std::max(room_.highest_number(), mirror_.highest_number());
  // Numbers given on our own meanwhile: the other servers may have given some too, higher ones
  // in the same window that this server has not heard of yet: the counter goes past the window.
  if (!numbers_.has_slot()) {
    // Once per server: its residue for numbers given out of reach (see outage_number()).
    link_.command({"INCR", key("slots")},
                  [this, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                    if (alive.lock() && reply != nullptr &&
                        reply->type == RedisValue::Type::integer && reply->integer > 0)
                      numbers_.set_slot(static_cast<std::uint64_t>(reply->integer));
                  });
  }
  // Numbers still in hand were reserved in a Redis that may have restarted empty since, where
  // another server may be handed them: they are dropped.
  numbers_.drop();
  link_.command({"EVAL", room_scripts::kSeedScript, "1", key("clients"), std::to_string(seed)});
  // The room's epoch and ids: the same on every server, so a client recovers on any of them;
  // and what this server missed while its link was down (the channel waits meanwhile).
  request_catch_up();
  publish_all_members();
  // What this server mirrors stays: the others' versions tell what it missed while away.
  mirror_.reconnected(EventLoop::Clock::now());
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
  // The next connection reads it all back again, from the room's last id.
  catching_up_ = false;
  held_.clear();
  held_bytes_ = 0;
  held_overflow_ = false;
  // Never sent: relayed on this server only.
  if (std::size_t unsent = outgoing_.messages(); unsent != 0) room_.messages_stored(0, unsent);
  outgoing_.drop();
  batch_writers_.clear();
  // The mirror is kept (the room shows no remote member while the link is down): on reconnect,
  // versions that did not move cost no re-read.
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
          room_scripts::kMembersScript,
          "2",
          key("members:") + server_id_,
          key("versions"),
          server_id_,
          signer_.version(outgoing_.version()),
          std::to_string(kPresenceTtl.count()),
          from_empty ? "1" : "0"};
}

void RedisRoomBus::publish_all_members() {
  // When members changed here while Redis was away (those events were never sent): a new version
  // with no event, so the others see a gap (the heartbeat's "v" line is ahead) and re-read this
  // set once. When nothing changed, the version stays and they read nothing: the set written
  // again (Redis may have restarted empty) is the one they mirror at that version.
  if (std::exchange(members_changed_away_, false)) outgoing_.step_version();
  std::vector<std::string> args = members_script_call(true);
  for (std::string& name : room_.local_names())
    args.push_back("+" + signer_.member_entry(name));
  link_.command(args);
}

void RedisRoomBus::publish(const chat::RoomEvent& event) {
  if (!link_.up() && event.kind != chat::RoomEventKind::message) members_changed_away_ = true;
  if (!link_.up() || finishing_) return;
  auto now = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch());
  if (outgoing_.add(event, now.count())) return flush();
  schedule_flush();
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
  if (outgoing_.empty()) return;
  OutgoingBatch::Sealed sealed = outgoing_.seal();
  if (!sealed.member_changes.empty()) {
    // Before the batch (commands keep their order): Redis holds the set at the version the
    // batch's "v" line says by the time anyone hears it.
    std::vector<std::string> args = members_script_call(false);
    args.insert(args.end(), std::make_move_iterator(sealed.member_changes.begin()),
                std::make_move_iterator(sealed.member_changes.end()));
    link_.command(args);
  }
  if (sealed.messages() == 0) {
    link_.publish(sealed.payload);
    return;
  }
  // Numbered, kept in the history stream and published, atomically (kPublishScript).
  std::size_t count = sealed.messages();
  std::vector<std::string> args{"EVAL",
                                room_scripts::kPublishScript,
                                "4",
                                key("ids"),
                                key("epoch"),
                                key("history"),
                                key("epochs"),
                                key("events"),
                                std::move(sealed.payload),
                                make_epoch(),
                                std::to_string(history_limit_),
                                std::to_string(count)};
  args.insert(args.end(), std::make_move_iterator(sealed.message_fields.begin()),
              std::make_move_iterator(sealed.message_fields.end()));
  // The writers' counts go with their messages, in the same script: a count is never ahead of
  // what the stream has, nor behind it.
  args.push_back(std::to_string(batch_writers_.size()));
  args.push_back(std::to_string(std::chrono::seconds(kWriterTtl).count()));
  for (auto& [writer, number] : batch_writers_) {
    args.push_back(key("writer:") + writer);
    args.push_back(std::to_string(number));
  }
  batch_writers_.clear();
  // The answer (the first id, or a failure when Redis went away) acknowledges the senders.
  bool sent = link_.command(
      args, [this, count, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;
        bool stored =
            reply != nullptr && reply->type == RedisValue::Type::integer && reply->integer > 0;
        if (stored) {
          // Answered on the connection after its catch-up: the room's epoch is Redis's.
          std::uint64_t up_to = static_cast<std::uint64_t>(reply->integer) + count - 1;
          if (stored_epoch_ != room_.epoch()) {
            stored_epoch_ = room_.epoch();
            stored_up_to_ = 0;
          }
          stored_up_to_ = std::max(stored_up_to_, up_to);
        }
        room_.messages_stored(stored ? static_cast<std::uint64_t>(reply->integer) : 0, count);
      });
  // The connection is going down (its end is told to the link a moment later): never sent, and
  // no answer will come to acknowledge the senders.
  if (!sent) room_.messages_stored(0, count);
}

bool RedisRoomBus::request_snapshot(const std::string& id) {
  return link_.command(
      {"EVAL", room_scripts::kSnapshotScript, "2", key("members:") + id, key("versions"), id},
      [this, id, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;
        // Asked again at the next heartbeat (the mirror is not synced).
        if (reply == nullptr || reply->is_error()) return mirror_.snapshot_failed(id);
        if (apply_snapshot(id, *reply)) room_.remote_members_changed();
      });
}

bool RedisRoomBus::apply_snapshot(const std::string& id, const RedisValue& reply) {
  std::optional<std::uint64_t> version;
  if (reply.elements.size() != 2) return mirror_.snapshot(id, std::nullopt, {});
  // A version that fails verification leaves the mirror not synced: its events alone build its
  // list, and the heartbeat asks again. One that is missing or not a number (not a chat-server,
  // or gone) too, and the heartbeat decides whether it is alive.
  if (auto text = signer_.version_text(id, reply.elements[0].text); text && !text->empty()) {
    std::uint64_t number = 0;
    auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), number);
    if (error == std::errc() && end == text->data() + text->size()) version = number;
  }
  std::vector<std::string_view> names;
  if (version) {
    names.reserve(reply.elements[1].elements.size());
    for (const RedisValue& entry : reply.elements[1].elements)
      if (auto name = signer_.member_name(id, entry.text)) names.push_back(*name);
  }
  return mirror_.snapshot(id, version, names);
}

void RedisRoomBus::on_message(std::string_view payload) {
  if (catching_up_ && payload.size() <= kMaxMessageBytes) {
    // Beyond the bound the catch-up runs again, from the room's last id then.
    if (held_overflow_ || held_bytes_ + payload.size() > kMaxHeldBytes) {
      held_overflow_ = true;
      return;
    }
    held_bytes_ += payload.size();
    held_.emplace_back(payload);
    return;
  }
  if (std::optional<chat::RoomBatch> batch = accept(payload)) deliver(*batch);
}

std::optional<chat::RoomBatch> RedisRoomBus::accept(std::string_view payload) {
  if (payload.size() > kMaxMessageBytes) {
    // One line per second at most: whoever sends them could otherwise flood the log instead.
    ++oversized_dropped_;
    auto now = EventLoop::Clock::now();
    if (now - oversized_logged_ >= std::chrono::seconds(1)) {
      logger_.info("redis: dropped an oversized room message ({} bytes; {} since the last report)",
                   payload.size(), std::exchange(oversized_dropped_, 0));
      oversized_logged_ = now;
    }
    return std::nullopt;
  }
  std::optional<chat::RoomBatch> batch = chat::decode_room_events(payload, max_line_);
  if (!batch) {
    logger_.info("redis: dropped a malformed room message ({} bytes): \"{}\"", payload.size(),
                 log_field(payload, 60));
    return std::nullopt;
  }
  if (!signer_.batch_verified(*batch, payload)) return std::nullopt;
  return batch;
}

void RedisRoomBus::deliver(chat::RoomBatch& batch) {
  if (!batch.epoch.empty()) room_.batch_epoch(batch.epoch, batch.events);
  if (batch.server_id == server_id_) {
    // Our own batch back from Redis, numbered: its messages reach the local members that asked
    // for ids now, in the room's order (the others had them at once). One read back already is
    // not numbered again (the room's last id is past it).
    room_.own_messages_numbered(batch.events);
    return;
  }
  for (const chat::NickReclaim& reclaim : batch.reclaims) {
    // A session of ours taken over by its reconnect there: the room checks the verifier.
    if (reclaim.owner == server_id_) room_.reclaimed_elsewhere(reclaim.nick, reclaim.verifier);
  }
  mirror_.heard(batch.server_id, batch.events, batch.members_version, EventLoop::Clock::now());
  if (batch.epoch == read_epoch_ && batch.first_id && *batch.first_id <= read_up_to_) {
    // Published between this server's subscribing and the catch-up's read: read back already.
    // (Its copy on the channel may come after the catch-up's answer: another connection.)
    std::uint64_t read = read_up_to_;
    std::erase_if(batch.events, [read](const chat::RoomEvent& event) {
      return event.kind == chat::RoomEventKind::message && event.id != 0 && event.id <= read;
    });
  }
  drop_floods(batch);
  if (!batch.events.empty()) room_.apply_remote(batch.events);
}

void RedisRoomBus::request_catch_up() {
  catching_up_ = true;
  std::uint64_t round = ++catch_up_round_;
  // The first time, this server knows no epoch of the room's and has missed nothing: its
  // newcomers read the history on join.
  bool sent = link_.command(
      {"EVAL", room_scripts::kEpochScript, "4", key("epoch"), key("ids"), key("history"),
       key("epochs"), make_epoch(), had_epoch_ ? room_.epoch() : std::string(),
       std::to_string(room_.last_id()), std::to_string(had_epoch_ ? history_limit_ : 0),
       std::to_string(stored_epoch_ == room_.epoch() ? std::max(stored_up_to_, room_.last_id())
                                                     : room_.last_id())},
      [this, round, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock() || round != catch_up_round_ || !catching_up_) return;
        catching_up_ = false;
        held_bytes_ = 0;
        std::vector<std::string> held = std::exchange(held_, {});
        bool again = std::exchange(held_overflow_, false);
        if (reply == nullptr) return;  // the link dropped: the next connection reads it back
        caught_up(*reply, std::move(held));
        if (again && link_.up()) request_catch_up();
      });
  if (!sent) catching_up_ = false;
}

void RedisRoomBus::caught_up(const RedisValue& reply, std::vector<std::string> held) {
  std::vector<chat::RoomBatch> batches;
  batches.reserve(held.size());
  for (const std::string& payload : held) {
    if (auto batch = accept(payload)) batches.push_back(std::move(*batch));
  }
  auto number = [](const RedisValue& value) {
    std::uint64_t out = 0;
    std::from_chars(value.text.data(), value.text.data() + value.text.size(), out);
    return out;
  };
  if (reply.type != RedisValue::Type::array || reply.elements.size() != 5) {
    // Not the script's answer (an error): the channel's batches as they came.
    logger_.info("redis: the room's epoch could not be read: {}", log_field(reply.text, 80));
    for (chat::RoomBatch& batch : batches)
      deliver(batch);
    return;
  }
  const std::string& epoch = reply.elements[0].text;
  std::uint64_t last = number(reply.elements[1]);
  if (!std::exchange(had_epoch_, true)) {
    room_.room_epoch(epoch, last, 0);
    for (chat::RoomBatch& batch : batches)
      deliver(batch);
    return;
  }
  std::uint64_t mine = room_.last_id();
  bool same = epoch == room_.epoch();
  // Where this server's view of the room stops: its last id, or where a new epoch starts.
  std::uint64_t from = same ? mine : number(reply.elements[2]);
  std::vector<history_stream::MissedEntry> read =
      history_stream::missed(reply.elements[4], signer_, max_line_, server_id_);
  std::erase_if(read, [from, last](const history_stream::MissedEntry& line) {
    return line.entry.id <= from || line.entry.id > last;
  });
  // The stream has the newest --history lines said meanwhile: what is older than the first of
  // them can no longer be read. (Without history there is no stream: the lines published after
  // this server subscribed come through the channel, the others are not counted.)
  std::uint64_t lost = 0;
  if (history_limit_ != 0) {
    std::uint64_t first = read.empty() ? last + 1 : read.front().entry.id;
    if (first > from + 1) lost = first - from - 1;
    read_epoch_ = epoch;
    read_up_to_ = last;  // (read back, or counted in `lost`)
  }
  // Redis restarted empty: the first server back raised "ended" to how far it had seen.
  if (std::uint64_t ended = number(reply.elements[3]); !same && ended > mine) lost += ended - mine;
  if (lost != 0) {
    logger_.info("redis: {} lines of the room said while the link was down could not be read back",
                 lost);
  }
  room_.room_epoch(epoch, from, lost);
  // Read back in order; this server's own lines reach only the members with ids (the others
  // had them at once).
  for (std::size_t i = 0; i < read.size();) {
    bool own = read[i].own;
    std::vector<chat::RoomEvent> run;
    for (; i < read.size() && read[i].own == own; ++i) {
      HistoryEntry& line = read[i].entry;
      run.push_back({chat::RoomEventKind::message,
                     std::move(line.name),
                     std::move(line.text),
                     {},
                     false,
                     line.id});
    }
    if (own) {
      room_.own_messages_numbered(run);
    } else {
      room_.apply_remote(run);
    }
  }
  if (!read.empty()) {
    logger_.info("redis: {} lines said while the link was down read back from the stream",
                 read.size());
  }
  for (chat::RoomBatch& batch : batches)
    deliver(batch);
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
  signer_.forget_quiet(EventLoop::Clock::now());
  // Signed with the version this server is at: the member changes that lead to it went out on
  // this link before, so Redis holds them when it runs this.
  std::string registration = signer_.registration(outgoing_.version());
  link_.command({"EVAL", room_scripts::kHeartbeatScript, "4", key("servers"),
                 key("members:") + server_id_, key("versions"), key("registrations"), server_id_,
                 std::to_string(kPresenceTtl.count()), std::move(registration)},
                [this, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
                  if (alive.lock() && reply != nullptr && !reply->is_error())
                    apply_presence(*reply);
                });
  // This server's version, after everything it published before (flushed now): a server that
  // lost the last changes sees the gap within a heartbeat (MemberMirror).
  outgoing_.announce_version();
  flush();
}

void RedisRoomBus::apply_presence(const RedisValue& reply) {
  auto now = EventLoop::Clock::now();
  std::unordered_map<std::string, std::uint64_t> live;  // id -> version (0: none yet)
  for (std::size_t i = 0; i + 2 < reply.elements.size(); i += 3) {
    const std::string& id = reply.elements[i].text;
    if (!chat::valid_server_id(id)) continue;
    // With a secret, a listed server counts only with a registration it signed.
    auto version =
        signer_.listed_version(id, reply.elements[i + 1].text, reply.elements[i + 2].text);
    if (version) live[id] = *version;
  }
  if (live_servers_ != live.size() + 1)
    logger_.info("redis: {} servers in the room", live.size() + 1);
  live_servers_ = live.size() + 1;
  std::vector<chat::RoomEvent> gone = mirror_.presence(live, now);
  if (!gone.empty()) room_.apply_remote(gone);
  room_.remote_members_changed();
}

void RedisRoomBus::admit(std::size_t history, AdmitCallback done) {
  if (!link_.up() && starting_) {
    waiting_for_start_.push_back({history, std::move(done)});
    return;
  }
  if (!link_.up()) return done(std::nullopt);
  if (numbers_.in_hand() == 0 || !waiting_.empty()) {
    waiting_.push_back({history, std::move(done)});
    return request_numbers();
  }
  std::uint64_t number = numbers_.take();
  // Busy: the next block is asked for before this one runs out.
  if (numbers_.running_low()) request_numbers();
  admit_with(number, history, std::move(done));
}

void RedisRoomBus::count_writer(const std::string& writer, std::uint64_t number) {
  if (!link_.up() || finishing_) return;  // (as publish: the message is not published either)
  for (auto& [known, last] : batch_writers_) {
    if (known == writer) {
      last = std::max(last, number);
      return;
    }
  }
  batch_writers_.emplace_back(writer, number);
}

void RedisRoomBus::writer_stored(const std::string& writer, WriterCallback done) {
  if (!link_.up()) return done(std::nullopt);
  bool sent = link_.command(
      {"GET", key("writer:") + writer},
      [done, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) mutable {
        if (!alive.lock()) return;
        if (reply == nullptr || reply->is_error()) return done(std::nullopt);
        if (reply->type == RedisValue::Type::nil) return done(0);
        std::uint64_t stored = 0;
        const std::string& text = reply->text;
        auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), stored);
        // Anything but a number was not written by kPublishScript: no count to trust.
        if (reply->type != RedisValue::Type::string || error != std::errc() ||
            end != text.data() + text.size())
          return done(std::nullopt);
        done(stored);
      });
  if (!sent) done(std::nullopt);
}

void RedisRoomBus::replay(std::uint64_t after, std::uint64_t up_to, ReplayCallback done) {
  if (!link_.up() || history_limit_ == 0 || up_to <= after) return done(std::nullopt);
  bool asked = link_.command(
      // The newest --history of the range (the stream may hold a few more: MAXLEN ~).
      history_stream::range(key("history"), after, up_to, history_limit_),
      [this, done, alive = std::weak_ptr<bool>(alive_)](const RedisValue* reply) {
        if (!alive.lock()) return;  // the bus (and the room it answers) is gone
        if (reply == nullptr || reply->type != RedisValue::Type::array) return done(std::nullopt);
        done(history_stream::entries(*reply, signer_, max_line_, true));
      });
  if (!asked) done(std::nullopt);
}

void RedisRoomBus::admit_with(std::uint64_t number, std::size_t history, AdmitCallback done) {
  if (history == 0 || history_limit_ == 0) return done(Admission{number, {}});
  bool asked = link_.command(
      history_stream::newest(key("history"), history),
      [this, number, done](const RedisValue* reply) {
        if (reply == nullptr) return done(std::nullopt);
        done(Admission{number, history_stream::entries(*reply, signer_, max_line_, false)});
      });
  if (!asked) done(std::nullopt);
}

void RedisRoomBus::request_numbers() {
  if (numbers_requested_) return;
  std::uint64_t size = numbers_.block_to_ask(EventLoop::Clock::now());
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
  numbers_.received(static_cast<std::uint64_t>(reply->integer), size);
  while (!waiting_.empty() && numbers_.in_hand() > 0) {
    Waiting waiting = std::move(waiting_.front());
    waiting_.pop_front();
    admit_with(numbers_.take(), waiting.history, std::move(waiting.done));
  }
  if (!waiting_.empty()) {
    // Joins come faster than one block per round trip: ask for twice as many next time.
    numbers_.grow();
    request_numbers();
  } else if (numbers_.running_low()) {
    request_numbers();
  }
}

void RedisRoomBus::release_nick(const std::string& nick_key) {
  if (!finishing_) nick_claims_.release(nick_key);
}

void RedisRoomBus::set_nick_proof(const std::string& nick_key, const std::string& proof) {
  if (link_.up() && !finishing_) nick_claims_.set_proof(nick_key, proof);
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
