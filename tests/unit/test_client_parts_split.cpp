// chat-client's pieces split out of ChatClient (issue 20): its ending rules (what proves
// delivery, what a reconnect mends, what fails), the --confirm-timeout watch, when stdin is read,
// and the framing of typed lines. All pure: the client gathers the facts and does the I/O.
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <string>

#include "chat/client_ending.hpp"
#include "chat/confirm_watch.hpp"
#include "chat/input_gate.hpp"
#include "chat/send_ledger.hpp"
#include "chat/typed_lines.hpp"

using namespace std::chrono_literals;
using mux::chat::Ending;
using Action = mux::chat::Ending::Action;

namespace {

// A greeted mux server, our half-close out, everything confirmed.
mux::chat::EndFacts clean() {
  mux::chat::EndFacts facts;
  facts.server = "h:1";
  facts.can_reconnect = true;
  facts.greeted = true;
  facts.output_shut_down = true;
  facts.input_closed = true;
  return facts;
}

}  // namespace

TEST_CASE("ending: the server's close after our half-close, all confirmed, proves delivery") {
  CHECK(mux::chat::server_closed(clean()).action == Action::delivered);
  mux::chat::EndFacts facts = clean();
  facts.can_reconnect = false;
  CHECK(mux::chat::server_closed(facts).action == Action::delivered);
}

TEST_CASE("ending: a close before any welcome fails and says nothing was sent") {
  mux::chat::EndFacts facts = clean();
  facts.greeted = false;
  Ending ending = mux::chat::server_closed(facts);
  CHECK(ending.action == Action::fail);
  CHECK(ending.why ==
        "connection to h:1 closed by the server before any chat welcome, so nothing was sent");
}

TEST_CASE("ending: a server's end notice is mended by a reconnect only when transient") {
  CHECK(mux::chat::transient_end("server shutting down"));
  CHECK(mux::chat::transient_end("server full (100 clients)"));
  CHECK_FALSE(mux::chat::transient_end("excess flood: too fast for 10 s"));
  mux::chat::EndFacts facts = clean();
  facts.end_reason = "server shutting down";
  Ending ending = mux::chat::server_closed(facts);
  CHECK(ending.action == Action::reconnect);
  CHECK(ending.why == "server shutting down");
  facts.end_reason = "quit";
  ending = mux::chat::server_closed(facts);
  CHECK(ending.action == Action::fail);
  CHECK(ending.why == "h:1 ended the session: quit");
  facts.end_reason = "server shutting down";
  facts.can_reconnect = false;  // --no-reconnect: even a restart ends the run
  CHECK(mux::chat::server_closed(facts).why == "h:1 ended the session: server shutting down");
}

TEST_CASE("ending: a close before our half-close is a drop, or a failure without reconnect") {
  mux::chat::EndFacts facts = clean();
  facts.output_shut_down = false;
  CHECK(mux::chat::server_closed(facts).action == Action::reconnect);
  facts.can_reconnect = false;
  CHECK(mux::chat::server_closed(facts).why ==
        "connection to h:1 closed by the server before all input was sent");
  facts.input_closed = false;
  CHECK(mux::chat::server_closed(facts).why == "connection to h:1 closed by the server");
}

TEST_CASE("ending: unconfirmed lines at the close go again only when numbered") {
  mux::chat::EndFacts facts = clean();
  facts.unconfirmed = 2;
  CHECK(mux::chat::server_closed(facts).action == Action::fail);
  CHECK(mux::chat::server_closed(facts).why ==
        "h:1 closed the connection before confirming 2 lines: they may not have been delivered");
  facts.numbered = true;
  Ending ending = mux::chat::server_closed(facts);
  CHECK(ending.action == Action::reconnect);
  CHECK(ending.why == "closed before confirming");
  facts.unconfirmed = 1;
  facts.numbered = false;
  CHECK(mux::chat::server_closed(facts).why ==
        "h:1 closed the connection before confirming 1 line: they may not have been delivered");
}

TEST_CASE("ending: a reset is a drop unless the server ended the session for good") {
  mux::chat::EndFacts facts = clean();
  CHECK(mux::chat::connection_failed(facts, "reset").action == Action::reconnect);
  facts.end_reason = "quit";
  Ending ending = mux::chat::connection_failed(facts, "reset");
  CHECK(ending.action == Action::fail);
  CHECK(ending.why == "connection to h:1: reset (the server ended the session: quit)");
  facts.end_reason.reset();
  facts.can_reconnect = false;
  CHECK(mux::chat::connection_failed(facts, "reset").why == "connection to h:1: reset");
}

TEST_CASE("ending: after a loss, nothing to reconnect for, or lines only a close could confirm") {
  mux::chat::EndFacts facts = clean();
  CHECK(mux::chat::after_loss(facts, "reset", true, false, 3).action == Action::delivered);
  CHECK(mux::chat::after_loss(facts, "reset", true, true, 3).action == Action::go_on);
  Ending ending = mux::chat::after_loss(facts, "reset", false, false, 1);
  CHECK(ending.action == Action::fail);
  CHECK(ending.why ==
        "connection to h:1 lost (reset) before the server confirmed our last lines: 1 line sent "
        "on it may not have been delivered");
  CHECK(mux::chat::after_loss(facts, "reset", false, false, 0).action == Action::go_on);
  facts.input_closed = false;
  CHECK(mux::chat::after_loss(facts, "reset", false, false, 5).action == Action::go_on);
}

TEST_CASE("ConfirmWatch: progress resets the timeout; then unsent bytes or no close fail") {
  mux::chat::ConfirmWatch watch(2s);
  auto t = mux::chat::ConfirmWatch::Clock::time_point{} + 100s;
  using Verdict = mux::chat::ConfirmWatch::Verdict;
  watch.start(1000, t);
  CHECK(watch.check(1000, t + 1s) == Verdict::waiting);
  CHECK(watch.check(500, t + 1900ms) == Verdict::waiting);  // progress
  CHECK(watch.check(500, t + 3s) == Verdict::waiting);      // 1.1 s since
  CHECK(watch.check(500, t + 4s) == Verdict::not_taken);
  CHECK(watch.failure(Verdict::not_taken, "h:1", 500) ==
        "h:1 took none of our last 500 bytes for 2 s, so they were not delivered (see "
        "--confirm-timeout)");
  watch.start(0, t);
  CHECK(watch.check(0, t + 1s) == Verdict::waiting);
  CHECK(watch.check(0, t + 2s) == Verdict::not_closed);
  CHECK(watch.failure(Verdict::not_closed, "h:1", 0)
            .starts_with("h:1 did not close the connection within 2 s of the end of input"));
}

TEST_CASE("InputGate: stdin stops for the greeting, the acks or the queue, and resumes on it") {
  mux::chat::InputGate gate(100);
  auto queued = [](std::size_t n) { return [n] { return n; }; };
  CHECK(gate.keep_reading(false, false, 0, queued(0)));
  CHECK_FALSE(gate.keep_reading(false, true, 0, queued(0)));
  CHECK_FALSE(gate.drained(0));  // not what it waits for
  CHECK(gate.greeted());
  CHECK_FALSE(gate.greeted());  // once
  CHECK_FALSE(gate.keep_reading(true, false, 101, queued(0)));
  CHECK_FALSE(gate.confirmed(51));
  CHECK(gate.confirmed(50));
  CHECK(gate.keep_reading(true, false, 100, queued(100)));
  CHECK_FALSE(gate.keep_reading(true, false, 0, queued(101)));
  CHECK_FALSE(gate.drained(1));
  CHECK(gate.drained(0));
}

TEST_CASE("TypedLines: a long line goes as pieces, messages noted, lines counted per link") {
  mux::chat::TypedLines typed(64);
  mux::chat::SendLedger ledger(std::string(32, 'd'));
  REQUIRE(ledger.on_line("* cap acks last=0"));
  CHECK(typed.frame("hello", 10, &ledger) == "hello\n");
  CHECK_FALSE(typed.first_cut());
  CHECK(typed.frame("/who", 10, &ledger) == "/who\n");  // a command: not confirmed
  CHECK(ledger.unconfirmed() == 1);
  CHECK(typed.frame("abcdefghijklmno", 10, &ledger) == "abcdefghij\nklmno\n");
  CHECK(ledger.unconfirmed() == 3);
  CHECK(typed.first_cut());
  CHECK_FALSE(typed.first_cut());  // said once per run
  CHECK(typed.lines_on_link() == 3);
  typed.new_link();
  CHECK(typed.lines_on_link() == 0);
  CHECK(typed.frame("plain", 10, nullptr) == "plain\n");  // a server without acks
  CHECK(ledger.unconfirmed() == 3);
  CHECK(typed.unsent_note(ledger) == "; 3 sent lines not confirmed");
  typed.held().push("later");
  CHECK(typed.unsent_note(ledger) == "; 1 typed line not sent; 3 sent lines not confirmed");
}

TEST_CASE("TypedLines: what the ledger sends again is framed, noted and counted") {
  mux::chat::TypedLines typed(64);
  mux::chat::SendLedger ledger(std::string(32, 'e'));
  REQUIRE(ledger.on_line("* cap acks last=0"));
  CHECK(typed.frame_resend(ledger).empty());
  typed.frame("one", 100, &ledger);
  typed.frame("two", 100, &ledger);
  ledger.dropped();
  typed.new_link();
  REQUIRE(ledger.on_line("* cap acks last=1"));
  CHECK(typed.frame_resend(ledger) == "two\n");
  CHECK(typed.lines_on_link() == 1);
  CHECK(ledger.unconfirmed() == 1);
}
