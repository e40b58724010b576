#include "chat/flood_control.hpp"

#include <algorithm>

namespace mux {
namespace {
std::chrono::milliseconds round_up_ms(TokenBucket::Clock::duration duration) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(duration);
  return ms.count() < 1 ? std::chrono::milliseconds(1) : ms;
}
}  // namespace

std::uint64_t FloodControl::flood_timeout_seconds() const noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(limits_.flood_timeout).count());
}

ClientRates& FloodControl::rates_of(std::unique_ptr<ClientRates>& rates,
                                    Clock::time_point now) const {
  if (!rates) {
    rates = std::make_unique<ClientRates>(ClientRates{
        TokenBucket(limits_.line_rate, limits_.line_burst, now),
        TokenBucket(limits_.byte_rate, limits_.byte_burst, now),
        TokenBucket(limits_.command_rate, limits_.command_burst, now), std::nullopt, std::nullopt});
  }
  return *rates;
}

FloodControl::LineCharge FloodControl::charge_line(std::unique_ptr<ClientRates>& client,
                                                   std::size_t bytes, Clock::time_point now) const {
  ClientRates& rates = rates_of(client, now);
  bool lines_ok = rates.lines.take(1, now);
  bool bytes_ok = rates.bytes.take(static_cast<double>(bytes), now);
  LineCharge charge;
  if (lines_ok && bytes_ok) {
    // The flood is over once the client has left half its allowance unused.
    if (rates.flooding_since && rates.lines.level(now) >= rates.lines.burst() / 2 &&
        rates.bytes.level(now) >= rates.bytes.burst() / 2) {
      rates.flooding_since.reset();
    }
    return charge;
  }
  if (!rates.flooding_since) {
    rates.flooding_since = now;
    charge.flood_started = true;
  } else if (now - *rates.flooding_since >= limits_.flood_timeout) {
    charge.handle = false;
    return charge;
  }
  // This line was read already and still counts; what follows waits until it is paid for.
  charge.pause =
      round_up_ms(std::max(rates.lines.time_until(0, now), rates.bytes.time_until(0, now)));
  return charge;
}

FloodControl::CommandCharge FloodControl::charge_command(std::unique_ptr<ClientRates>& client,
                                                         Clock::time_point now) const {
  ClientRates& rates = rates_of(client, now);
  CommandCharge charge;
  if (rates.commands.take_if_available(1, now)) return charge;
  charge.run = false;
  if (!rates.last_command_notice || now - *rates.last_command_notice >= kCommandNoticeInterval) {
    charge.first_notice = !rates.last_command_notice;
    charge.notice = true;
    rates.last_command_notice = now;
  }
  // Read more slowly until the next command is paid for.
  charge.pause = round_up_ms(rates.commands.time_until(1, now));
  return charge;
}

}  // namespace mux
