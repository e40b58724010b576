// ClientScreen: what chat-client writes where, in a pipe and on a terminal, to the byte.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "chat/client_terminal.hpp"

namespace {
struct Outputs {
  std::string out;
  std::string err;
  std::string terminal;
  mux::ClientScreen screen{false, [this](std::string_view text) { out += text; },
                           [this](std::string_view text) { err += text; }};
};
}  // namespace

TEST_CASE("in a pipe the room's lines go to stdout in one write, the client's notices to stderr") {
  Outputs io;
  CHECK_FALSE(io.screen.on_terminal());
  CHECK(io.screen.room_line("[bob]: hi", false) == "[bob]: hi");
  CHECK(io.screen.room_line("[bob]: \x1b[31mred", false) == "[bob]: ^[[31mred");
  CHECK(io.out.empty());  // gathered until flushed
  io.screen.flush();
  CHECK(io.out == "[bob]: hi\n[bob]: ^[[31mred\n");
  io.screen.flush();  // nothing more
  CHECK(io.out == "[bob]: hi\n[bob]: ^[[31mred\n");
  io.screen.notice("connection to x lost (reset); reconnecting");
  CHECK(io.err == "mux: connection to x lost (reset); reconnecting\n");
  // The user's own lines are on their screen already (the pipe's writer): not shown again.
  io.screen.own_line("hello", "alice");
  io.screen.flush();
  CHECK(io.out == "[bob]: hi\n[bob]: ^[[31mred\n");
}

TEST_CASE("a line the client cut is marked, and the text returned is without the mark") {
  Outputs io;
  CHECK(io.screen.room_line("[bob]: long", true) == "[bob]: long");
  io.screen.flush();
  CHECK(io.out == "[bob]: long [line cut at 1 MiB]\n");
}

TEST_CASE("on a terminal everything goes above the prompt, the sent line as the room sees it") {
  Outputs io;
  io.screen.set_terminal([&io](std::string_view text) { io.terminal += text; });
  CHECK(io.screen.on_terminal());
  io.screen.room_line("[bob]: hi", false);
  io.screen.flush();
  io.screen.notice("reconnected to x after 1.0 s");
  io.screen.own_line("hello", "alice");
  io.screen.own_line("//slash", "alice");  // the server strips the escape too
  io.screen.own_line("/who", "alice");     // a command as typed
  io.screen.own_line("before the welcome", "");
  io.screen.own_line("", "alice");  // nothing
  CHECK(io.terminal ==
        "[bob]: hi\n* reconnected to x after 1.0 s\n[alice]: hello\n[alice]: /slash\n> /who\n"
        "[you]: before the welcome\n");
  CHECK(io.out.empty());
  CHECK(io.err.empty());
  // The editor is gone (end of input): back to stdout and stderr.
  io.screen.set_terminal({});
  io.screen.notice("bye");
  CHECK(io.err == "mux: bye\n");
}

TEST_CASE("--timestamps starts each shown line with the local time") {
  std::string out;
  mux::ClientScreen screen(
      true, [&out](std::string_view text) { out += text; }, [](std::string_view) {});
  CHECK(screen.room_line("[bob]: hi", false) == "[bob]: hi");
  screen.flush();
  REQUIRE(out.size() == 9 + 10);  // "HH:MM:SS " + "[bob]: hi\n"
  CHECK(out[2] == ':');
  CHECK(out[5] == ':');
  CHECK(out.substr(8) == " [bob]: hi\n");
}
