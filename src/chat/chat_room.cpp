#include "chat/chat_room.hpp"

#include <algorithm>
#include <utility>

#include "chat/chat_protocol.hpp"
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
    if (charge_command(sender, now)) commands_.run(sender, command);
    return;
  }
  if (command.text.empty()) return;  // an empty line carries nothing worth a delivery
  if (!sender.writer_.empty() && !acks_.number_message(sender)) return;
  logger_.detail("[{}]: {}", sender.name_, command.text);
  if (relay_.sender() != &sender) flush_relay();
  relay_.set_sender(&sender);
  // In a room numbered by Redis, a local line gets its id when it comes back from there: the
  // members that asked for ids have it then, the others at once.
  bool to_redis = bus_->shared() && bus_->connected();
  if (history_.room_ids() && to_redis) relay_.set_numbered_later();
  std::uint64_t id = append_message(sender.name_, command.text, 0);
  bus_->publish_message(sender.name_, command.text);
  if (sender.wants_acks_ || to_redis) acks_.relayed(sender, id, to_redis);
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
  acks_.forget(member.id_);
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
  catch_up_.forget(member.id_);
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
  if (!reachable) catch_up_.answer_pending();  // with what this server has
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
