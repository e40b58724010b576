// FloodControl: the room's per-client limits as decisions, driven with a fake clock. The rates
// are powers of two so every pause below is exact.
#include <doctest/doctest.h>

#include <chrono>
#include <memory>

#include "chat/flood_control.hpp"

using mux::ClientLimits;
using mux::ClientRates;
using mux::FloodControl;
using namespace std::chrono_literals;

namespace {
ClientLimits small_limits() {
  ClientLimits limits;
  limits.line_rate = 4;
  limits.line_burst = 2;
  limits.byte_rate = 1024;
  limits.byte_burst = 1024;
  limits.command_rate = 2;
  limits.command_burst = 2;
  limits.flood_timeout = 4s;
  return limits;
}

void check_line(const FloodControl::LineCharge& charge, bool handle, bool started,
                std::chrono::milliseconds pause) {
  CHECK(charge.handle == handle);
  CHECK(charge.flood_started == started);
  CHECK(charge.pause == pause);
}

void check_command(const FloodControl::CommandCharge& charge, bool run, bool notice, bool first,
                   std::chrono::milliseconds pause) {
  CHECK(charge.run == run);
  CHECK(charge.notice == notice);
  CHECK(charge.first_notice == first);
  CHECK(charge.pause == pause);
}
}  // namespace

TEST_CASE("lines within the burst pass; the first one over it starts a flood, told once") {
  FloodControl flood(small_limits());
  FloodControl::Clock::time_point t0{};
  std::unique_ptr<ClientRates> rates;
  check_line(flood.charge_line(rates, 10, t0), true, false, 0ms);
  REQUIRE(rates != nullptr);  // made at the first charge, full
  check_line(flood.charge_line(rates, 10, t0), true, false, 0ms);
  // One line in debt at 4 lines/s: read nothing for 250 ms.
  check_line(flood.charge_line(rates, 10, t0), true, true, 250ms);
  // Still flooding: paused again, not told again (-0.5 - 1 = -1.5 lines: 375 ms).
  check_line(flood.charge_line(rates, 10, t0 + 125ms), true, false, 375ms);
  // Back to the full burst: the flood is over, so the next one over the limits is told again.
  check_line(flood.charge_line(rates, 10, t0 + 1s), true, false, 0ms);
  check_line(flood.charge_line(rates, 10, t0 + 1s), true, false, 0ms);
  check_line(flood.charge_line(rates, 10, t0 + 1s), true, true, 250ms);
}

TEST_CASE("bytes count like lines, and a flood that lasts flood_timeout disconnects") {
  FloodControl flood(small_limits());
  CHECK(flood.flood_timeout_seconds() == 4);
  FloodControl::Clock::time_point t0{};
  std::unique_ptr<ClientRates> rates;
  // 4096 bytes against a 1024-byte burst at 1024 bytes/s: 3 s of debt.
  check_line(flood.charge_line(rates, 4096, t0), true, true, 3000ms);
  check_line(flood.charge_line(rates, 4096, t0 + 3s), true, false, 4000ms);
  // Still in debt 4 s after the flood started: the line is not handled, nothing to pause.
  check_line(flood.charge_line(rates, 1, t0 + 4s), false, false, 0ms);
}

TEST_CASE("commands over their rate are dropped, told at most once a second") {
  FloodControl flood(small_limits());
  FloodControl::Clock::time_point t0{};
  std::unique_ptr<ClientRates> rates;
  check_command(flood.charge_command(rates, t0), true, false, false, 0ms);
  check_command(flood.charge_command(rates, t0), true, false, false, 0ms);
  // Empty at 2 commands/s: the next one is 500 ms away.
  check_command(flood.charge_command(rates, t0), false, true, true, 500ms);
  check_command(flood.charge_command(rates, t0 + 250ms), false, false, false, 250ms);
  check_command(flood.charge_command(rates, t0 + 500ms), true, false, false, 0ms);
  check_command(flood.charge_command(rates, t0 + 1s), true, false, false, 0ms);
  // A second since the last notice: told again, but it is not the first notice.
  check_command(flood.charge_command(rates, t0 + 1s), false, true, false, 500ms);
}

TEST_CASE("commands and lines share one client's rates, made once") {
  FloodControl flood(small_limits());
  FloodControl::Clock::time_point t0{};
  std::unique_ptr<ClientRates> rates;
  check_command(flood.charge_command(rates, t0), true, false, false, 0ms);
  const ClientRates* made = rates.get();
  check_line(flood.charge_line(rates, 10, t0), true, false, 0ms);
  CHECK(rates.get() == made);
  CHECK(rates->lines.level(t0) == doctest::Approx(1));
  CHECK(rates->commands.level(t0) == doctest::Approx(1));
}
