#include "chat/chat_room.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <iterator>
#include <system_error>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "core/access/access_tokens.hpp"
#include "core/base/http_sniff.hpp"
#include "core/base/logger.hpp"
#include "core/base/sanitize.hpp"
#include "core/base/units.hpp"

namespace mux {
namespace {
// How mux upload-client's stream starts (the MUXUP/1 header); chat does not depend on upload/.
constexpr std::string_view kUploadHeaderStart = "MUXUP/1 ";

// What every client is told when the other servers sharing the room go out of reach, and back.
constexpr std::string_view kOthersUnreachable =
    "* the other servers are out of reach: only this server's clients hear you for now\n";
constexpr std::string_view kOthersBack = "* the other servers are back: the room is whole again\n";

// A writer's key as the room keeps it (and, in a Redis room, Redis): a digest, so the writer key
// itself, which lets its holder's lines be taken for repeats, is kept nowhere.
std::string writer_key(std::string_view writer) {
  return sha256_hex(fmt::format("mux writer\n{}", writer));
}

}  // namespace

ChatRoom::ChatRoom(Logger& logger, std::size_t max_line, ClientLimits limits, ClockSource clock)
    : logger_(logger), max_line_(max_line), flood_(limits), clock_(std::move(clock)) {}

void ChatRoom::join(ChatMember& member, std::string_view origin) {
  flush_relay();
  member.id_ = ++next_member_id_;
  member.join_number_ = ++arrivals_;
  member.has_nick_ = false;
  member.lines_seen_ = 0;
  member.held_.reset();
  member.claiming_ = false;
  member.numbering_ = false;
  member.rates_.reset();
  by_id_[member.id_] = &member;
  if (!bus_->connected() && !bus_->starting()) {
    admit(member, origin, local_number(), history_.all());
    return;
  }
  // The number comes from the room-wide counter: one round trip before the welcome (after the
  // bus's first connection, when it is still being made).
  member.admitting_ = true;
  bus_->admit(history_.limit(), [this, id = member.id_, origin = std::string(origin)](
                                    std::optional<RoomBus::Admission> admission) {
    auto it = by_id_.find(id);
    if (it == by_id_.end() || !it->second->admitting_) return;
    if (admission) {
      admit(*it->second, origin, admission->number, admission->history);
    } else {
      admit(*it->second, origin, local_number(), history_.all());
    }
  });
}

std::size_t ChatRoom::everyone() const {
  return members_.size() + (bus_reachable_ ? bus_->remote_count() : 0);
}

std::uint64_t ChatRoom::local_number() {
  highest_number_ = std::max(highest_number_, bus_->highest_remote_number());
  if (!bus_->connected()) {
    // Out of reach: a number no other server gives meanwhile.
    if (auto number = bus_->outage_number()) return *number;
  }
  return ++highest_number_;
}

void ChatRoom::admit(ChatMember& member, std::string_view origin, std::uint64_t number,
                     const std::vector<HistoryEntry>& history) {
  flush_relay();
  member.admitting_ = false;
  if (number < RoomBus::kOwnNumbersFrom) highest_number_ = std::max(highest_number_, number);
  member.name_ = fmt::format("Client {}", number);
  member.in_room_ = true;
  members_.add(member);
  logger_.info("{} joined from {}", member.name_, origin);
  send_to(member, chat::notice::welcome(member.name_));
  if (!bus_reachable_) send_to(member, std::string(kOthersUnreachable));
  if (history_.limit() != 0 && !history.empty()) send_to(member, RoomHistory::format(history));
  if (announces(everyone())) broadcast(chat::notice::joined(member.name_), &member);
  bus_->publish({chat::RoomEventKind::joined, member.name_, {}, {}, false});
  release_held(member);
}

void ChatRoom::release_held(ChatMember& member) {
  // What it sent while it waited, in order, as if it had just arrived; a /nick among them that
  // must wait for its claim holds the rest again.
  bool any = false;
  while (member.holds_lines() && !member.waits_for_bus() && member.in_room_) {
    ChatMember::Held& held = *member.held_;
    auto [text, cut] = std::move(held.lines.front());
    held.lines.erase(held.lines.begin());  // a few lines at most
    held.bytes -= text.size();
    receive_line(member, text, cut);
    any = true;
  }
  if (any) end_of_input();
  if (!member.holds_lines() && !member.leave_pending()) member.held_.reset();  // its memory back
  if (member.waits_for_bus() || member.acks_owed_ != 0 || !member.leave_pending()) return;
  auto [reason, too_slow] = std::move(*member.held_->leave);
  member.held_.reset();
  leave_now(member, reason, too_slow);
  member.close_after_output();
}

void ChatRoom::receive_line(ChatMember& sender, std::string_view text, bool cut) {
  if (sender.waits_for_bus()) {
    if (!sender.held_) sender.held_ = std::make_unique<ChatMember::Held>();
    ChatMember::Held& held = *sender.held_;
    if (held.bytes + text.size() > kMaxHeldBytes) {
      logger_.info("{}: dropped a line sent while waiting for the room (over {} held)",
                   sender.name_.empty() ? std::string("a joining client") : sender.name_,
                   format_bytes(kMaxHeldBytes));
      return;
    }
    held.bytes += text.size();
    held.lines.emplace_back(text, cut);
    // Read nothing more until the answer comes: what is held stays one read's worth.
    sender.pause_input(kHoldPause);
    return;
  }
  if (!sender.in_room_) return;
  if (sender.lines_seen_++ == 0 && refuse_other_protocol(sender, text)) return;
  Clock::time_point now = clock_();
  if (!charge_line(sender, text.size() + 1, now)) return;
  if (cut) send_to(sender, chat::notice::line_cut(max_line_));
  chat::Command command = chat::parse_command(text);
  if (command.kind != chat::CommandKind::message) {
    logger_.detail("{}: {}", sender.name_, text);
    if (charge_command(sender, now)) run_command(sender, command);
    return;
  }
  if (command.text.empty()) return;  // an empty line carries nothing worth a delivery
  if (!sender.writer_.empty()) {
    std::uint64_t number = sender.writer_next_++;
    if (!writers_.accept(sender.writer_, number)) {
      // A resend whose first copy (still unread on the connection it replaced) came in after
      // all: stored once, confirmed again.
      logger_.detail("{}: a message sent again was stored already", sender.name_);
      return sender.deliver(make_block(chat::notice::ack_again()));
    }
    bus_->count_writer(sender.writer_, number);
  }
  logger_.detail("[{}]: {}", sender.name_, command.text);
  if (relay_.sender() != &sender) flush_relay();
  relay_.set_sender(&sender);
  // In a room numbered by Redis, a local line gets its id when it comes back from there: the
  // members that asked for ids have it then, the others at once.
  bool to_redis = bus_->shared() && bus_->connected();
  if (history_.room_ids() && to_redis) relay_.set_numbered_later();
  std::uint64_t id = append_message(sender.name_, command.text, 0);
  bus_->publish_message(sender.name_, command.text);
  if (to_redis) {
    // Acknowledged once Redis answers (messages_stored); every sender's run keeps the count.
    if (!awaiting_store_.empty() && awaiting_store_.back().first == sender.id_) {
      ++awaiting_store_.back().second;
    } else {
      awaiting_store_.emplace_back(sender.id_, 1);
    }
    if (sender.wants_acks_) ++sender.acks_owed_;
  } else if (sender.wants_acks_) {
    acknowledge(sender, id, 1);
  }
  if (relay_.full()) flush_relay();
}

bool ChatRoom::refuse_other_protocol(ChatMember& sender, std::string_view first_line) {
  // The line is sanitized already; the checks only look at printable ASCII.
  if (looks_like_http_request(first_line)) {
    // Nothing is said back: whatever sent it does not speak chat.
    leave(sender,
          fmt::format("refused: an HTTP request, not a chat client: \"{}\"",
                      log_field(first_line, 100)),
          false);
    sender.close_after_output();
    return true;
  }
  if (first_line.substr(0, kUploadHeaderStart.size()) == kUploadHeaderStart) {
    send_to(sender, chat::notice::not_an_upload_server());
    leave(sender, "refused: an upload (MUXUP/1 header), not a chat client", false);
    sender.close_after_output();
    return true;
  }
  return false;
}

bool ChatRoom::charge_line(ChatMember& sender, std::size_t bytes, Clock::time_point now) {
  FloodControl::LineCharge charge = flood_.charge_line(sender.rates_, bytes, now);
  const ClientLimits& limits = flood_.limits();
  if (charge.flood_started) {
    logger_.info("{} sends too fast: reading it more slowly", sender.name_);
    send_to(sender, chat::notice::slow_down(limits.line_rate,
                                            static_cast<std::uint64_t>(limits.byte_rate)));
  }
  if (!charge.handle) {
    std::uint64_t seconds = flood_.flood_timeout_seconds();
    send_to(sender, chat::notice::excess_flood(seconds));
    leave(sender, fmt::format("excess flood: too fast for {} s", seconds), false);
    sender.close_after_output();
    return false;
  }
  if (charge.pause.count() != 0) sender.pause_input(charge.pause);
  return true;
}

bool ChatRoom::charge_command(ChatMember& sender, Clock::time_point now) {
  FloodControl::CommandCharge charge = flood_.charge_command(sender.rates_, now);
  if (charge.run) return true;
  if (charge.first_notice) logger_.info("{} sends commands too fast: ignoring some", sender.name_);
  if (charge.notice) send_to(sender, chat::notice::commands_ignored(flood_.limits().command_rate));
  sender.pause_input(charge.pause);
  return false;
}

void ChatRoom::end_of_input() {
  flush_relay();
}

std::uint64_t ChatRoom::append_message(std::string_view name, std::string_view text,
                                       std::uint64_t room_id) {
  std::uint64_t id = history_.number(room_id);
  relay_.append(name, text, id, members_.with_ids() != 0);
  // A local line waiting for its id is kept once it has one (own_messages_numbered).
  if (!relay_.numbered_later()) history_.remember(name, text, id);
  return id;
}

void ChatRoom::acknowledge(ChatMember& member, std::uint64_t id, std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count; ++i)
    text += chat::notice::ack(id == 0 ? 0 : id + i);
  // Straight to the sender: an ack never breaks the chunk being relayed to the others.
  member.deliver(make_block(std::move(text)));
}

void ChatRoom::messages_stored(std::uint64_t first_id, std::size_t count) {
  while (count > 0 && !awaiting_store_.empty()) {
    auto& [member_id, messages] = awaiting_store_.front();
    std::size_t take = std::min(count, messages);
    if (auto it = ack_members_.find(member_id); it != ack_members_.end()) {
      ChatMember& sender = *it->second;
      acknowledge(sender, first_id, take);
      sender.acks_owed_ -= std::min<std::uint64_t>(sender.acks_owed_, take);
      // It ended its input meanwhile: it leaves once its last message is acknowledged.
      if (sender.acks_owed_ == 0 && sender.leave_pending()) release_held(sender);
    }
    if (first_id != 0) first_id += take;
    count -= take;
    messages -= take;
    if (messages == 0) awaiting_store_.pop_front();
  }
}

void ChatRoom::flush_relay() {
  if (relay_.empty()) return;
  RelayChunk::Taken chunk = relay_.take();
  Block plain = make_block(std::move(chunk.plain));
  Block with_ids = chunk.with_ids.empty() ? Block{} : make_block(std::move(chunk.with_ids));
  members_.deliver_chunk(plain, with_ids, chunk.sender, chunk.numbered_later);
}

void ChatRoom::own_messages_numbered(const std::vector<chat::RoomEvent>& events) {
  if (closing_) return;
  flush_relay();
  for (const chat::RoomEvent& event : events) {
    if (event.kind != chat::RoomEventKind::message || !history_.numbered_later(event.id)) continue;
    history_.remember(event.name, event.text, event.id);
    if (members_.with_ids() == 0) continue;
    std::string text;
    chat::append_relay_with_id(text, event.id, event.name, event.text);
    members_.deliver_numbered(make_block(std::move(text)), event.name);
  }
}

void ChatRoom::room_epoch(const std::string& epoch, std::uint64_t last) {
  RoomHistory::EpochChange change = history_.start_epoch(epoch, last);
  if (change == RoomHistory::EpochChange::same) return answer_pending_since();
  flush_relay();
  bool first = change == RoomHistory::EpochChange::first;
  if (!first) logger_.info("the room's message ids start again (epoch {}): Redis lost them", epoch);
  for (ChatMember* member : members_.list()) {
    if (!member->wants_ids_) continue;
    // Its ids from now on; after a first connection to Redis they simply continue the room's
    // (nothing was lost), after that the history they counted was lost with Redis.
    std::string text = chat::notice::cap_ids(history_.epoch(), history_.last_id(), max_line_,
                                             secrets_.of(member->id_));
    if (!first) text += chat::notice::missed_ids_lost();
    send_to(*member, std::move(text));
  }
  answer_pending_since();
}

void ChatRoom::batch_epoch(const std::string& epoch, const std::vector<chat::RoomEvent>& events) {
  if (epoch == history_.epoch() && history_.room_ids()) return;
  // Another server reached the new epoch first: ours starts just before its first message.
  std::uint64_t first = 0;
  for (const chat::RoomEvent& event : events) {
    if (event.kind == chat::RoomEventKind::message && event.id != 0) {
      first = event.id;
      break;
    }
  }
  room_epoch(epoch, first == 0 ? 0 : first - 1);
}

void ChatRoom::run_command(ChatMember& sender, const chat::Command& command) {
  switch (command.kind) {
    case chat::CommandKind::nick:
      rename(sender, command.text);
      return;
    case chat::CommandKind::who:
      flush_relay();
      if (command.text.empty()) {
        sender.deliver(who_list());
      } else {
        send_to(sender, who_matching(command.text));
      }
      return;
    case chat::CommandKind::help:
      send_to(sender, chat::notice::help());
      return;
    case chat::CommandKind::quit:
      leave(sender, "quit", false);
      sender.close_after_output();
      return;
    case chat::CommandKind::cap:
      return enable_ids(sender, command.text);
    case chat::CommandKind::since:
      return replay_since(sender, command.text);
    case chat::CommandKind::history:
      return send_history(sender, command.text);
    case chat::CommandKind::reclaim:
      return reclaim(sender, command.text);
    case chat::CommandKind::unknown:
      send_to(sender, chat::notice::unknown_command(command.text));
      return;
    case chat::CommandKind::message:
      return;  // not a command; receive_line relays those
  }
}

void ChatRoom::enable_ids(ChatMember& member, std::string_view argument) {
  std::string_view word = argument.substr(0, argument.find(' '));
  if (chat::fold_nick(word) == "acks") {
    std::string_view writer = word.size() < argument.size() ? argument.substr(word.size() + 1) : "";
    if (!writer.empty() && !chat::valid_secret(writer))
      return send_to(member, chat::notice::cap_usage());
    member.wants_acks_ = true;
    ack_members_[member.id_] = &member;
    // Without a count the room can trust (a Redis room whose Redis is out of reach), no
    // numbers: the client then sends nothing again.
    if (writer.empty() || (bus_->shared() && !bus_->connected()))
      return send_to(member, chat::notice::cap_acks());
    member.writer_ = writer_key(writer);
    if (!bus_->shared()) return start_numbering(member, writers_.last(member.writer_));
    // A Redis room: the count is the room's (the client may come from another server, or from
    // this one before a restart); its next lines wait for it, in order.
    member.numbering_ = true;
    bus_->writer_stored(member.writer_,
                        [this, id = member.id_](std::optional<std::uint64_t> stored) {
                          auto it = by_id_.find(id);
                          if (it == by_id_.end() || !it->second->numbering_) return;
                          ChatMember& asker = *it->second;
                          asker.numbering_ = false;
                          if (stored) {
                            writers_.learn(asker.writer_, *stored);
                            start_numbering(asker, writers_.last(asker.writer_));
                          } else {
                            asker.writer_.clear();
                            send_to(asker, chat::notice::cap_acks());
                          }
                          release_held(asker);
                        });
    return;
  }
  if (chat::fold_nick(argument) != "ids") return send_to(member, chat::notice::cap_usage());
  flush_relay();  // what was relayed before goes out without ids, before the answer
  members_.want_ids(member);
  // The answer says where its ids start, the longest line the server takes, and who is here.
  bool made = false;
  const std::string& secret = secrets_.issue(member.id_, made);
  if (made) store_nick_proof(member);
  send_to(member, chat::notice::cap_ids(history_.epoch(), history_.last_id(), max_line_, secret));
  member.deliver(who_list());
}

void ChatRoom::start_numbering(ChatMember& member, std::uint64_t stored) {
  member.writer_next_ = stored + 1;
  send_to(member, chat::notice::cap_acks_numbered(stored));
}

void ChatRoom::replay_since(ChatMember& member, std::string_view argument) {
  std::optional<chat::Since> since = chat::parse_since(argument);
  if (!since) return send_to(member, chat::notice::since_usage());
  if (bus_->shared() && !history_.room_ids() && bus_reachable_ && !closing_) {
    // A Redis room whose ids this server has not learnt yet (it has just started): answered
    // once it has them, or once Redis is known to be out of reach.
    replays_[member.id_] = &member;
    pending_since_.emplace_back(member.id_, std::string(argument));
    return;
  }
  if (history_.room_ids() && since->epoch == history_.epoch() &&
      since->id + 1 < history_.first_kept_id() && bus_->connected() && history_.limit() != 0) {
    // Older than this server's memory (it restarted, or the client comes from another server of
    // the room): the rest comes from the room's stream in Redis, one round trip. Until then the
    // member gets lines without ids (a recovering client ignores them: the replay has them).
    std::uint64_t up_to = history_.first_kept_id() - 1;
    replays_[member.id_] = &member;
    bus_->replay(since->id, up_to,
                 [this, id = member.id_, after = since->id,
                  up_to](std::optional<std::vector<HistoryEntry>> stream) {
                   auto it = replays_.find(id);
                   if (it == replays_.end()) return;  // gone meanwhile
                   ChatMember& asker = *it->second;
                   replays_.erase(it);
                   finish_replay(asker, after, up_to, stream);
                 });
    return;
  }
  bool other_epoch = since->epoch != history_.epoch();
  finish_replay(member, other_epoch ? 0 : since->id, 0, std::nullopt, other_epoch);
}

void ChatRoom::finish_replay(ChatMember& member, std::uint64_t after, std::uint64_t up_to,
                             const std::optional<std::vector<HistoryEntry>>& stream,
                             bool other_epoch) {
  // It answers as /cap ids does first: a reconnecting client sends one command, and the lines
  // relayed to it before this (plain) all come again in the replay, with their ids.
  enable_ids(member, "ids");
  std::string out = history_.replay(member.name_, after, up_to, stream, other_epoch);
  if (!out.empty()) send_to(member, std::move(out));
}

void ChatRoom::send_history(ChatMember& member, std::string_view argument) {
  std::uint64_t count = 0;
  auto [end, error] = std::from_chars(argument.data(), argument.data() + argument.size(), count);
  if (argument.empty() || error != std::errc{} || end != argument.data() + argument.size())
    return send_to(member, chat::notice::history_usage());
  if (history_.limit() == 0) return send_to(member, chat::notice::no_history());
  std::vector<HistoryEntry> last = history_.last(count);
  if (!last.empty()) send_to(member, RoomHistory::format(last));
}

void ChatRoom::reclaim(ChatMember& member, std::string_view argument) {
  std::optional<chat::Reclaim> wanted = chat::parse_reclaim(argument);
  if (!wanted) return send_to(member, chat::notice::reclaim_usage());
  ChatMember* holder = nicks_.holder(wanted->nick);
  // Not held here: maybe by this session's ghost on another server of the room.
  if (holder == nullptr) return rename(member, wanted->nick, wanted->secret);
  if (holder == &member) return rename(member, wanted->nick);
  ChatMember& ghost = *holder;
  // Only the exact nick, held by a session that is not waiting on the bus, with its secret.
  if (ghost.name_ != wanted->nick || !secrets_.proves(ghost.id_, wanted->secret) ||
      ghost.admitting_ || ghost.claiming_ || ghost.holds_lines()) {
    return rename(member, wanted->nick);
  }
  logger_.info("{} takes back {} from its previous connection", member.name_, ghost.name_);
  // The nick passes from the ghost to its successor here, never released room-wide meanwhile
  // (another server could claim it in between).
  end_ghost(ghost, "replaced by its reconnect");
  apply_rename(member, wanted->nick);
}

void ChatRoom::reclaimed_elsewhere(const std::string& nick, const std::string& verifier) {
  if (closing_) return;
  ChatMember* holder = nicks_.holder(nick);
  if (holder == nullptr) return;  // gone meanwhile
  ChatMember& ghost = *holder;
  // Redis is an untrusted peer: only the holder's own secret ends its session.
  if (ghost.name_ != nick || !secrets_.verified_by(ghost.id_, verifier)) {
    logger_.info("redis: refused a reclaim of {} that does not prove its session's secret",
                 log_field(nick));
    return;
  }
  logger_.info("{} was taken back by its reconnect on another server", ghost.name_);
  // The nick is the other server's already: freed here only.
  end_ghost(ghost, "replaced by its reconnect on another server");
}

void ChatRoom::end_ghost(ChatMember& ghost, std::string_view reason) {
  send_to(ghost, chat::notice::replaced());
  nicks_.hand_over(ghost.name_);
  ghost.has_nick_ = false;
  leave_now(ghost, reason, false);
  ghost.close_after_output();
}

void ChatRoom::store_nick_proof(const ChatMember& member) {
  if (!member.has_nick_) return;
  std::string_view secret = secrets_.of(member.id_);
  if (secret.empty()) return;
  bus_->set_nick_proof(nicks_.key(member.name_), ReconnectSecrets::proof_of(secret));
}

void ChatRoom::rename(ChatMember& member, std::string_view nick, std::string_view secret) {
  if (nick.empty()) return send_to(member, chat::notice::nick_usage());
  std::optional<std::string> problem = nicks_.problem(nick);
  if (problem) return send_to(member, chat::notice::nick_invalid(nick, *problem));
  if (member.has_nick_ && member.name_ == nick)
    return send_to(member, chat::notice::nick_unchanged(nick));
  if (!nick_free_here(member, nick)) return;
  std::string key = nicks_.key(nick);
  bool own_look_alike = member.has_nick_ && nicks_.key(member.name_) == key;
  if (!bus_->connected() || own_look_alike) return apply_rename(member, nick);
  // Room-wide: the nick must also be free on every other server (claimed in Redis). Its next
  // lines wait for the answer, so they go out under the name it then has.
  member.claiming_ = true;
  RoomBus::ClaimCallback claimed_then = [this, id = member.id_, nick = std::string(nick),
                                         key](std::optional<bool> claimed) {
    auto it = by_id_.find(id);
    if (it == by_id_.end() || !it->second->in_room_) {
      nicks_.abandon_claim(key, claimed.value_or(false));
      return;
    }
    ChatMember& claimer = *it->second;
    claimer.claiming_ = false;
    if (claimed.has_value() && !*claimed) {
      logger_.info("{} cannot be {}: taken on another server", claimer.name_, nick);
      send_to(claimer, chat::notice::nick_taken(nick));
    } else if (nick_free_here(claimer, nick)) {
      // (Another client here may have taken it while the claim travelled.)
      apply_rename(claimer, nick);
    }
    release_held(claimer);
  };
  if (chat::valid_secret(secret)) {
    nicks_.reclaim(key, std::string(nick), ReconnectSecrets::proof_of(secret),
                   ReconnectSecrets::verifier_of(secret), std::move(claimed_then));
  } else {
    nicks_.claim(key, std::move(claimed_then));
  }
}

bool ChatRoom::nick_free_here(ChatMember& member, std::string_view nick) {
  const ChatMember* holder = nicks_.holder(nick);
  // A member may change its own nick into a look-alike of itself (case, accents).
  if (holder == nullptr || holder == &member) return true;
  if (chat::fold_nick(holder->name_) == chat::fold_nick(nick)) {
    send_to(member, chat::notice::nick_taken(nick));
  } else {
    send_to(member, chat::notice::nick_look_alike(nick, holder->name_));
  }
  return false;
}

void ChatRoom::apply_rename(ChatMember& member, std::string_view nick) {
  nicks_.take(member,
              member.has_nick_ ? std::optional<std::string_view>(member.name_) : std::nullopt,
              nick);
  std::string old_name = std::exchange(member.name_, std::string(nick));
  member.has_nick_ = true;
  store_nick_proof(member);
  members_.names_changed();
  logger_.info("{} is now {}", old_name, member.name_);
  bus_->publish({chat::RoomEventKind::renamed, old_name, member.name_, {}, false});
  std::string text = chat::notice::renamed(old_name, member.name_);
  if (announces(everyone())) {
    broadcast(std::move(text), nullptr);
  } else {
    send_to(member, std::move(text));
  }
}

bool ChatRoom::leave(ChatMember& member, std::string_view reason, bool too_slow) {
  bool holds = member.waits_for_bus() && member.holds_lines();
  if (!closing_ && (holds || (member.acks_owed_ != 0 && member.in_room_))) {
    // Its last lines are still held: they are handled first (release_held), then it leaves;
    // or its last messages wait for Redis: it leaves once they are acknowledged.
    if (!member.held_) member.held_ = std::make_unique<ChatMember::Held>();
    if (!member.held_->leave) member.held_->leave.emplace(std::string(reason), too_slow);
    return false;
  }
  leave_now(member, reason, too_slow);
  return true;
}

void ChatRoom::gone(ChatMember& member) {
  if (member.leave_pending()) {
    auto [reason, too_slow] = std::move(*member.held_->leave);
    member.held_.reset();
    leave_now(member, reason, too_slow);
  }
  member.held_.reset();
  member.claiming_ = false;
  member.numbering_ = false;
  member.acks_owed_ = 0;
  by_id_.erase(member.id_);
  ack_members_.erase(member.id_);
}

void ChatRoom::leave_now(ChatMember& member, std::string_view reason, bool too_slow) {
  member.claiming_ = false;
  member.numbering_ = false;
  if (member.admitting_) {
    member.admitting_ = false;
    by_id_.erase(member.id_);
    logger_.info("a client left while joining ({})", reason);
    return;
  }
  if (!member.in_room_) return;
  flush_relay();  // its last messages go out before the notice that it left
  remove(member);
  logger_.info("{} left ({})", member.name_, reason);
  // A slow reader's disconnect is always announced: the others should know why it went quiet.
  if (!closing_ && (too_slow || everyone() < announce_up_to_)) {
    broadcast(chat::notice::left(member.name_, too_slow), nullptr);
  }
  bus_->publish({chat::RoomEventKind::left, member.name_, std::string(reason), {}, too_slow});
}

void ChatRoom::remove(ChatMember& member) {
  members_.remove(member);
  member.in_room_ = false;
  secrets_.forget(member.id_);
  replays_.erase(member.id_);
  by_id_.erase(member.id_);
  if (member.has_nick_) nicks_.release(member.name_);
  relay_.forget(&member);
}

void ChatRoom::close_all() {
  flush_relay();
  closing_ = true;
  broadcast(chat::notice::shutting_down(), nullptr);
  // close_after_output() makes each member leave (removing itself) once it is done; work on a
  // copy so the removals cannot disturb the walk.
  std::vector<ChatMember*> everyone = members_.list();
  for (auto& [id, member] : by_id_) {
    if (member->admitting_) everyone.push_back(member);
  }
  for (ChatMember* member : everyone) {
    leave(*member, "server shutting down", false);
    member->close_after_output();
  }
}

const Block& ChatRoom::who_list() {
  return members_.who_list(
      [this] { return bus_reachable_ ? bus_->remote_names() : std::vector<std::string>{}; });
}

std::string ChatRoom::who_matching(std::string_view text) const {
  return members_.who_matching(text,
                               bus_reachable_ ? bus_->remote_names() : std::vector<std::string>{});
}

void ChatRoom::send_to(ChatMember& member, std::string text) {
  flush_relay();  // keep every receiver's view in the order things happened
  member.deliver(make_block(std::move(text)));
}

void ChatRoom::broadcast(std::string text, const ChatMember* except) {
  flush_relay();
  broadcast(make_block(std::move(text)), except);
}

void ChatRoom::broadcast(const Block& block, const ChatMember* except) {
  members_.broadcast(block, except);
}

void ChatRoom::apply_remote(const std::vector<chat::RoomEvent>& events) {
  if (closing_) return;
  members_.names_changed();
  std::size_t everyone = this->everyone();
  bool announced = announces(everyone);
  // Beyond the threshold each remote join and leave is logged at the detail level only: a
  // huge room's arrivals would otherwise be a log line each on every server.
#define MUX_ROOM_LOG(...)          \
  do {                             \
    if (announced) {               \
      logger_.info(__VA_ARGS__);   \
    } else {                       \
      logger_.detail(__VA_ARGS__); \
    }                              \
  } while (false)
  for (const chat::RoomEvent& event : events) {
    switch (event.kind) {
      case chat::RoomEventKind::message:
        // Remote lines go to every local member; they never share a block with a local sender's.
        if (relay_.sender() != nullptr) flush_relay();
        append_message(event.name, event.text, event.id);
        if (relay_.full()) flush_relay();
        break;
      case chat::RoomEventKind::joined:
        MUX_ROOM_LOG("{} joined on another server", event.name);
        if (announced) broadcast(chat::notice::joined(event.name), nullptr);
        break;
      case chat::RoomEventKind::left:
        MUX_ROOM_LOG("{} left on another server ({})", event.name, log_field(event.text));
        if (event.too_slow || everyone < announce_up_to_)
          broadcast(chat::notice::left(event.name, event.too_slow), nullptr);
        break;
      case chat::RoomEventKind::renamed:
        MUX_ROOM_LOG("{} is now {} (on another server)", event.name, event.text);
        if (announced) broadcast(chat::notice::renamed(event.name, event.text), nullptr);
        break;
    }
  }
  flush_relay();
}

#undef MUX_ROOM_LOG

void ChatRoom::bus_reachable(bool reachable) {
  if (reachable == bus_reachable_) return;
  bus_reachable_ = reachable;
  members_.names_changed();
  if (!closing_) broadcast(std::string(reachable ? kOthersBack : kOthersUnreachable), nullptr);
  if (!reachable) answer_pending_since();  // with what this server has
}

void ChatRoom::answer_pending_since() {
  for (auto& [id, argument] : std::exchange(pending_since_, {})) {
    auto it = replays_.find(id);
    if (it == replays_.end()) continue;  // gone meanwhile
    ChatMember& member = *it->second;
    replays_.erase(it);
    replay_since(member, argument);
  }
}

std::vector<std::string> ChatRoom::local_names() const {
  std::vector<std::string> names;
  names.reserve(members_.size());
  for (const ChatMember* member : members_.list())
    names.push_back(member->name_);
  return names;
}

std::vector<std::pair<std::string, std::string>> ChatRoom::local_nick_proofs() const {
  std::vector<std::pair<std::string, std::string>> proofs;
  for (const auto& [key, member] : nicks_.holders()) {
    if (std::string_view secret = secrets_.of(member->id_); !secret.empty())
      proofs.emplace_back(key, ReconnectSecrets::proof_of(secret));
  }
  return proofs;
}

std::vector<std::string> ChatRoom::local_nick_keys() const {
  return nicks_.keys();
}

}  // namespace mux
