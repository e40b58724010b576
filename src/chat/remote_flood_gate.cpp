#include "chat/remote_flood_gate.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace mux::chat {
namespace {

// Whether `bucket` can pay `amount` now. A line bigger than the burst passes on a full bucket and
// leaves a debt, as a local client's would.
bool can_pay(const TokenBucket& bucket, double amount, TokenBucket::Clock::time_point now) {
  return bucket.level(now) >= std::min(amount, bucket.burst());
}

}  // namespace

RemoteFloodGate::RemoteFloodGate(RemoteLimits limits)
    : limits_(limits),
      total_(limits.byte_rate * kTotalRateFactor, limits.byte_burst, Clock::now()) {}

RemoteFloodGate::Verdict RemoteFloodGate::admit(std::string_view server, std::string_view name,
                                                std::size_t bytes, Clock::time_point now) {
  // Server ids and names cannot hold a space (room_event.hpp), so the key is unambiguous.
  std::string key = fmt::format("{} {}", server, name);
  auto it = senders_.find(key);
  if (it == senders_.end()) {
    if (senders_.size() >= kMaxSenders) forget_idle(now);
    if (senders_.size() >= kMaxSenders) return Verdict::drop;
    it = senders_
             .emplace(std::move(key),
                      Sender{TokenBucket(limits_.line_rate, limits_.line_burst, now),
                             TokenBucket(limits_.byte_rate, limits_.byte_burst, now), false})
             .first;
  }
  Sender& sender = it->second;
  auto amount = static_cast<double>(bytes);
  // Only what passes is charged: a dropped line costs its sender nothing more, so a flood ends
  // as soon as the sender slows down.
  bool ok = can_pay(sender.lines, 1, now) && can_pay(sender.bytes, amount, now);
  if (ok && can_pay(total_, amount, now)) {
    sender.lines.take(1, now);
    sender.bytes.take(amount, now);
    total_.take(amount, now);
    sender.flooding = false;
    total_flooding_ = false;
    return Verdict::pass;
  }
  bool first = ok ? !std::exchange(total_flooding_, true) : !std::exchange(sender.flooding, true);
  return first ? Verdict::first_drop : Verdict::drop;
}

void RemoteFloodGate::forget_idle(Clock::time_point now) {
  std::erase_if(senders_, [now](const auto& entry) {
    const Sender& sender = entry.second;
    return sender.lines.level(now) >= sender.lines.burst() &&
           sender.bytes.level(now) >= sender.bytes.burst();
  });
}

}  // namespace mux::chat
