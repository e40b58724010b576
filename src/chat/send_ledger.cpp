#include "chat/send_ledger.hpp"

#include <charconv>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"

namespace mux::chat {
namespace {

std::optional<std::uint64_t> number(std::string_view digits) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size())
    return std::nullopt;
  return value;
}

const char* plural(std::size_t count) {
  return count == 1 ? "" : "s";
}

}  // namespace

std::string SendLedger::make_writer() {
  return make_secret();
}

std::string SendLedger::request() const {
  return fmt::format("/cap acks {}\n", writer_);
}

bool SendLedger::is_message(std::string_view piece) {
  return !piece.empty() && (!piece.starts_with('/') || piece.starts_with("//"));
}

void SendLedger::sent(std::string piece) {
  pending_bytes_ += piece.size() + 1;
  pending_.push_back({numbered_ ? ++next_ : 0, std::move(piece)});
}

void SendLedger::confirm() {
  if (pending_.empty()) return;  // (a server acking more than we sent: nothing to confirm)
  pending_bytes_ -= pending_.front().text.size() + 1;
  pending_.pop_front();
}

std::optional<SendLedger::Seen> SendLedger::on_line(std::string_view line) {
  if (line == "* cap acks") {
    // A server that does not number our messages: what earlier connections left unconfirmed
    // cannot be sent again without risking a repeat.
    answered_ = true;
    numbered_ = false;
    lost_ += pending_.size();
    pending_.clear();
    pending_bytes_ = 0;
    return Seen{};
  }
  if (line.starts_with("* cap acks last=")) {
    std::optional<std::uint64_t> stored = number(line.substr(16));
    if (!stored) return std::nullopt;
    answered_ = true;
    numbered_ = true;
    stored_ = *stored;
    return Seen{true};
  }
  if (line == "* ack again") {
    confirm();
    return Seen{};
  }
  if (!line.starts_with("* ack ")) return std::nullopt;
  std::optional<std::uint64_t> id = number(line.substr(6));
  if (!id) return std::nullopt;
  if (*id == 0 && !pending_.empty()) ++local_only_;
  confirm();
  return Seen{};
}

std::size_t SendLedger::dropped() {
  answered_ = false;
  if (numbered_) return 0;
  std::size_t count = pending_.size();
  lost_ += count;
  pending_.clear();
  pending_bytes_ = 0;
  return count;
}

std::vector<std::string> SendLedger::resend() {
  std::vector<std::string> again;
  for (Pending& message : pending_) {
    if (message.number != 0 && message.number <= stored_) {
      ++found_stored_;  // it reached the room; only its ack was lost
    } else {
      again.push_back(std::move(message.text));
    }
  }
  pending_.clear();
  pending_bytes_ = 0;
  next_ = stored_;  // the server numbers this connection's messages from stored_ + 1
  return again;
}

std::vector<std::string> SendLedger::problems(std::string_view server) const {
  std::vector<std::string> out;
  if (lost_ > 0) {
    out.push_back(
        fmt::format("{} line{} sent to {} just before a connection dropped {} not confirmed and "
                    "may not have been delivered",
                    lost_, plural(lost_), server, lost_ == 1 ? "was" : "were"));
  }
  if (local_only_ > 0) {
    out.push_back(fmt::format(
        "{} line{} reached only the clients of {}: the other servers of the room were out of reach",
        local_only_, plural(local_only_), server));
  }
  return out;
}

}  // namespace mux::chat
