#include "chat/chat_room.hpp"

#include <algorithm>
#include <utility>

#include "chat/chat_protocol.hpp"
#include "core/http_sniff.hpp"
#include "core/logger.hpp"
#include "core/sanitize.hpp"

namespace mux {
namespace {
// A chunk's messages are handed out at the latest at this size, so one block stays small
// compared with --max-queue and a reader gets them while the sender is still sending.
constexpr std::size_t kRelayBlockBytes = 32 * 1024;
// How mux upload-client's stream starts (the MUXUP/1 header); chat does not depend on upload/.
constexpr std::string_view kUploadHeaderStart = "MUXUP/1 ";
// A client over its command rate hears about it at most this often.
constexpr std::chrono::seconds kCommandNoticeInterval{1};

std::chrono::milliseconds round_up_ms(TokenBucket::Clock::duration duration) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration);
  return ms.count() < 1 ? std::chrono::milliseconds(1) : ms;
}
}  // namespace

ChatRoom::ChatRoom(Logger& logger, std::size_t max_line, ClientLimits limits, ClockSource clock)
    : logger_(logger), max_line_(max_line), limits_(limits), clock_(std::move(clock)) {}

void ChatRoom::join(ChatMember& member, std::string_view origin) {
  flush_relay();
  member.join_number_ = ++arrivals_;
  member.name_ = fmt::format("Client {}", member.join_number_);
  member.has_nick_ = false;
  member.lines_seen_ = 0;
  Clock::time_point now = clock_();
  member.rates_.emplace(ChatMember::Rates{
      TokenBucket(limits_.line_rate, limits_.line_burst, now),
      TokenBucket(limits_.byte_rate, limits_.byte_burst, now),
      TokenBucket(limits_.command_rate, limits_.command_burst, now), std::nullopt, std::nullopt});
  member.in_room_ = true;
  who_cache_.reset();
  member.slot_ = members_.size();
  members_.push_back(&member);
  logger_.info("{} joined from {}", member.name_, origin);
  send_to(member, chat::notice::welcome(member.name_));
  if (members_.size() <= kAnnounceUpTo) broadcast(chat::notice::joined(member.name_), &member);
}

void ChatRoom::receive_line(ChatMember& sender, std::string_view text, bool cut) {
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
  logger_.detail("[{}]: {}", sender.name_, command.text);
  if (relay_sender_ != &sender) flush_relay();
  relay_sender_ = &sender;
  chat::notice::append_relay(relay_text_, sender.name_, command.text);
  if (relay_text_.size() >= kRelayBlockBytes) flush_relay();
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
  ChatMember::Rates& rates = *sender.rates_;
  bool lines_ok = rates.lines.take(1, now);
  bool bytes_ok = rates.bytes.take(static_cast<double>(bytes), now);
  if (lines_ok && bytes_ok) {
    // The flood is over once the client has left half its allowance unused.
    if (rates.flooding_since && rates.lines.level(now) >= rates.lines.burst() / 2 &&
        rates.bytes.level(now) >= rates.bytes.burst() / 2) {
      rates.flooding_since.reset();
    }
    return true;
  }
  if (!rates.flooding_since) {
    rates.flooding_since = now;
    logger_.info("{} sends too fast: reading it more slowly", sender.name_);
    send_to(sender, chat::notice::slow_down(limits_.line_rate,
                                            static_cast<std::uint64_t>(limits_.byte_rate)));
  } else if (now - *rates.flooding_since >= limits_.flood_timeout) {
    auto seconds = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(limits_.flood_timeout).count());
    send_to(sender, chat::notice::excess_flood(seconds));
    leave(sender, fmt::format("excess flood: too fast for {} s", seconds), false);
    sender.close_after_output();
    return false;
  }
  // This line was read already and still counts; what follows waits until it is paid for.
  sender.pause_input(
      round_up_ms(std::max(rates.lines.time_until(0, now), rates.bytes.time_until(0, now))));
  return true;
}

bool ChatRoom::charge_command(ChatMember& sender, Clock::time_point now) {
  ChatMember::Rates& rates = *sender.rates_;
  if (rates.commands.take_if_available(1, now)) return true;
  // Over the command rate: the command is dropped, not queued (answers to a storm of /who would
  // be output the client caused), and the client is read more slowly.
  if (!rates.last_command_notice || now - *rates.last_command_notice >= kCommandNoticeInterval) {
    if (!rates.last_command_notice) {
      logger_.info("{} sends commands too fast: ignoring some", sender.name_);
    }
    rates.last_command_notice = now;
    send_to(sender, chat::notice::commands_ignored(limits_.command_rate));
  }
  sender.pause_input(round_up_ms(rates.commands.time_until(1, now)));
  return false;
}

void ChatRoom::end_of_input() {
  flush_relay();
}

void ChatRoom::flush_relay() {
  if (relay_text_.empty()) return;
  ChatMember* sender = std::exchange(relay_sender_, nullptr);
  broadcast(make_block(std::exchange(relay_text_, {})), sender);
}

void ChatRoom::run_command(ChatMember& sender, const chat::Command& command) {
  switch (command.kind) {
    case chat::CommandKind::nick:
      rename(sender, command.text);
      return;
    case chat::CommandKind::who:
      flush_relay();
      sender.deliver(who_list());
      return;
    case chat::CommandKind::help:
      send_to(sender, chat::notice::help());
      return;
    case chat::CommandKind::quit:
      leave(sender, "quit", false);
      sender.close_after_output();
      return;
    case chat::CommandKind::unknown:
      send_to(sender, chat::notice::unknown_command(command.text));
      return;
    case chat::CommandKind::message:
      return;  // not a command; receive_line relays those
  }
}

void ChatRoom::rename(ChatMember& member, std::string_view nick) {
  if (nick.empty()) return send_to(member, chat::notice::nick_usage());
  std::optional<std::string> problem = chat::nick_problem(nick);
  if (!problem) problem = nick_rules_.problem(nick);
  if (problem) return send_to(member, chat::notice::nick_invalid(nick, *problem));
  if (member.has_nick_ && member.name_ == nick)
    return send_to(member, chat::notice::nick_unchanged(nick));
  std::string key = nick_rules_.look_alike_key(nick);
  auto taken = taken_nicks_.find(key);
  // A member may change its own nick into a look-alike of itself (case, accents).
  if (taken != taken_nicks_.end() && taken->second != &member) {
    if (chat::fold_nick(taken->second->name_) == chat::fold_nick(nick))
      return send_to(member, chat::notice::nick_taken(nick));
    return send_to(member, chat::notice::nick_look_alike(nick, taken->second->name_));
  }
  if (member.has_nick_) taken_nicks_.erase(nick_rules_.look_alike_key(member.name_));
  taken_nicks_[std::move(key)] = &member;
  std::string old_name = std::exchange(member.name_, std::string(nick));
  member.has_nick_ = true;
  who_cache_.reset();
  logger_.info("{} is now {}", old_name, member.name_);
  std::string text = chat::notice::renamed(old_name, member.name_);
  if (members_.size() <= kAnnounceUpTo) {
    broadcast(std::move(text), nullptr);
  } else {
    send_to(member, std::move(text));
  }
}

void ChatRoom::leave(ChatMember& member, std::string_view reason, bool too_slow) {
  if (!member.in_room_) return;
  flush_relay();  // its last messages go out before the notice that it left
  remove(member);
  logger_.info("{} left ({})", member.name_, reason);
  // A slow reader's disconnect is always announced: the others should know why it went quiet.
  if (!closing_ && (too_slow || members_.size() < kAnnounceUpTo)) {
    broadcast(chat::notice::left(member.name_, too_slow), nullptr);
  }
}

void ChatRoom::remove(ChatMember& member) {
  // Swap-remove keeps leaving O(1); /who restores arrival order from join_number_.
  ChatMember* last = members_.back();
  members_[member.slot_] = last;
  last->slot_ = member.slot_;
  members_.pop_back();
  member.in_room_ = false;
  who_cache_.reset();
  if (member.has_nick_) taken_nicks_.erase(nick_rules_.look_alike_key(member.name_));
  if (relay_sender_ == &member) relay_sender_ = nullptr;
}

void ChatRoom::close_all() {
  flush_relay();
  closing_ = true;
  broadcast(chat::notice::shutting_down(), nullptr);
  // close_after_output() makes each member leave (removing itself) once it is done; work on a
  // copy so the removals cannot disturb the walk.
  std::vector<ChatMember*> everyone = members_;
  for (ChatMember* member : everyone) {
    leave(*member, "server shutting down", false);
    member->close_after_output();
  }
}

const Block& ChatRoom::who_list() {
  if (who_cache_) return who_cache_;
  std::vector<const ChatMember*> ordered(members_.begin(), members_.end());
  std::sort(ordered.begin(), ordered.end(), [](const ChatMember* a, const ChatMember* b) {
    return a->join_number_ < b->join_number_;
  });
  std::vector<std::string_view> names;
  names.reserve(ordered.size());
  for (const ChatMember* member : ordered)
    names.emplace_back(member->name_);
  who_cache_ = make_block(chat::notice::who(names));
  return who_cache_;
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
  for (ChatMember* member : members_) {
    if (member != except) member->deliver(block);
  }
}

}  // namespace mux
