// The chat protocol's pure parts: sanitizing (controls, UTF-8), commands, nicks.
#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "chat/chat_protocol.hpp"

using mux::chat::CommandKind;
using mux::chat::fold_nick;
using mux::chat::nick_problem;
using mux::chat::parse_command;
using mux::chat::sanitize;

namespace {
const std::string kFFFD = "\xEF\xBF\xBD";
}

TEST_CASE("sanitize passes printable ASCII, TAB and valid UTF-8 unchanged") {
  CHECK(sanitize("hello, world ~!") == "hello, world ~!");
  CHECK(sanitize("a\tb") == "a\tb");
  CHECK(sanitize("") == "");
  // 2-, 3- and 4-byte sequences at the edges of their ranges
  CHECK(sanitize("\xC2\xA0 caf\xC3\xA9") == "\xC2\xA0 caf\xC3\xA9");
  CHECK(sanitize("\xE0\xA0\x80 \xEF\xBF\xBF \xE2\x82\xAC") ==
        "\xE0\xA0\x80 \xEF\xBF\xBF \xE2\x82\xAC");
  CHECK(sanitize("\xF0\x90\x80\x80 \xF4\x8F\xBF\xBF \xF0\x9F\x98\x80") ==
        "\xF0\x90\x80\x80 \xF4\x8F\xBF\xBF \xF0\x9F\x98\x80");
}

TEST_CASE("sanitize shows C0 controls and DEL in caret notation") {
  CHECK(sanitize("\x1b[31mred\x1b[0m") == "^[[31mred^[[0m");
  CHECK(sanitize(std::string_view("a\0b", 3)) == "a^@b");
  CHECK(sanitize("bell\x07") == "bell^G");
  CHECK(sanitize("del\x7f") == "del^?");
  CHECK(sanitize("cr\rlf") == "cr^Mlf");
  CHECK(sanitize("\x1f") == "^_");
}

TEST_CASE("sanitize replaces C1 controls with U+FFFD") {
  CHECK(sanitize("\xC2\x9B"
                 "31m") == kFFFD + "31m");  // U+009B, the 8-bit CSI
  CHECK(sanitize("\xC2\x80\xC2\x9F") == kFFFD + kFFFD);
}

TEST_CASE("sanitize replaces each maximal ill-formed subpart with one U+FFFD") {
  CHECK(sanitize("\xFF") == kFFFD);
  CHECK(sanitize("a\x80z") == "a" + kFFFD + "z");            // stray continuation byte
  CHECK(sanitize("\xC0\xAF") == kFFFD + kFFFD);              // overlong '/'
  CHECK(sanitize("\xE0\x80\xAF") == kFFFD + kFFFD + kFFFD);  // overlong, second byte out of range
  CHECK(sanitize("\xED\xA0\x80") == kFFFD + kFFFD + kFFFD);  // surrogate U+D800
  CHECK(sanitize("\xF4\x90\x80\x80") == kFFFD + kFFFD + kFFFD + kFFFD);  // above U+10FFFF
  CHECK(sanitize("\xE2\x82z") == kFFFD + "z");      // truncated 3-byte sequence
  CHECK(sanitize("\xF0\x9F\x98z") == kFFFD + "z");  // truncated 4-byte sequence
  CHECK(sanitize("\xF5\x80") == kFFFD + kFFFD);
  CHECK(sanitize("end\xE2\x82") == "end" + kFFFD);  // incomplete at the end
}

TEST_CASE("sanitize drops an incomplete sequence at the end of a cut line") {
  CHECK(sanitize("cut\xE2\x82", true) == "cut");
  CHECK(sanitize("cut\xF0", true) == "cut");
  // Only a sequence the cut interrupted: an invalid one stays visible.
  CHECK(sanitize("cut\xFF", true) == "cut" + kFFFD);
  CHECK(sanitize("cut\xE2\x82z", true) == "cut" + kFFFD + "z");
}

TEST_CASE("parse_command recognises the four commands, case-insensitively") {
  CHECK(parse_command("hello").kind == CommandKind::message);
  CHECK(parse_command("hello").text == "hello");
  CHECK(parse_command("/who").kind == CommandKind::who);
  CHECK(parse_command("/WHO extra").kind == CommandKind::who);
  CHECK(parse_command("/who  ali ").text == "ali");
  CHECK(parse_command("/help").kind == CommandKind::help);
  CHECK(parse_command("/quit").kind == CommandKind::quit);
  auto nick = parse_command("/nick   alice  ");
  CHECK(nick.kind == CommandKind::nick);
  CHECK(nick.text == "alice");
  CHECK(parse_command("/nick").text == "");
  CHECK(parse_command("/nick\tbob").text == "bob");
  CHECK(parse_command("/nick two words").text == "two words");
}

TEST_CASE("parse_command reports unknown commands and unescapes //") {
  auto unknown = parse_command("/dance now");
  CHECK(unknown.kind == CommandKind::unknown);
  CHECK(unknown.text == "/dance");
  CHECK(parse_command("/").kind == CommandKind::unknown);
  CHECK(parse_command("/nickname x").kind == CommandKind::unknown);
  auto escaped = parse_command("//shrug");
  CHECK(escaped.kind == CommandKind::message);
  CHECK(escaped.text == "/shrug");
}

TEST_CASE("nick_problem accepts 1 to 32 printable characters without spaces") {
  CHECK_FALSE(nick_problem("alice"));
  CHECK_FALSE(nick_problem("a"));
  CHECK_FALSE(nick_problem(std::string(32, 'x')));
  CHECK_FALSE(nick_problem("Jos\xC3\xA9"));
  // 32 two-byte characters are 64 bytes but 32 characters
  std::string accents;
  for (int i = 0; i < 32; ++i)
    accents += "\xC3\xA9";
  CHECK_FALSE(nick_problem(accents));
}

TEST_CASE("nick_problem rejects empty, long, spaced and invisible names") {
  CHECK(nick_problem("") == std::string("it is empty"));
  CHECK(nick_problem(std::string(33, 'x')) == std::string("longer than 32 characters"));
  CHECK(nick_problem("Client 3") == std::string("no spaces or invisible characters"));
  CHECK(nick_problem("a\tb"));
  CHECK(
      nick_problem("Client\xC2\xA0"
                   "3"));                      // no-break space
  CHECK(nick_problem("al\xE2\x80\x8Bice"));    // zero-width space
  CHECK(nick_problem("\xE2\x80\xAEtxt.exe"));  // right-to-left override
  CHECK(nick_problem("bad\xEF\xBF\xBD"));      // U+FFFD
  CHECK(nick_problem("bad\xFF") == std::string("it is not valid UTF-8"));
}

TEST_CASE("fold_nick folds ASCII letters only") {
  CHECK(fold_nick("AlIcE") == "alice");
  CHECK(fold_nick("\xC3\x89") == "\xC3\x89");
}

TEST_CASE("notices have the documented text") {
  namespace notice = mux::chat::notice;
  CHECK(notice::relay("alice", "hi") == "[alice]: hi\n");
  CHECK(notice::joined("Client 3") == "* Client 3 joined\n");
  CHECK(notice::left("alice", false) == "* alice left\n");
  CHECK(notice::left("alice", true) == "* alice left (too slow)\n");
  CHECK(notice::renamed("Client 3", "alice") == "* Client 3 is now alice\n");
  CHECK(notice::who({"Client 1", "bob"}) == "* online (2): Client 1, bob\n");
  CHECK(notice::server_full() == "* server full\n");
  CHECK(notice::shutting_down() == "* server shutting down\n");
}

TEST_CASE("the notices that end a session are told apart from every other line") {
  namespace notice = mux::chat::notice;
  using std::optional, std::string_view;
  CHECK(notice::session_end_reason(notice::server_full()) == optional<string_view>("server full"));
  CHECK(notice::session_end_reason("* server full: too many connections from your address\n") ==
        optional<string_view>("server full: too many connections from your address"));
  CHECK(notice::session_end_reason("* not allowed\r\n") == optional<string_view>("not allowed"));
  CHECK(notice::session_end_reason(notice::excess_flood(3)) ==
        optional<string_view>("excess flood: too fast for 3 s, disconnected"));
  CHECK(notice::session_end_reason(notice::not_an_upload_server()).has_value());
  CHECK(notice::session_end_reason(notice::shutting_down()) ==
        optional<string_view>("server shutting down"));
  // Everything else a server says leaves the session running.
  CHECK_FALSE(notice::session_end_reason(notice::welcome("Client 2")).has_value());
  CHECK_FALSE(notice::session_end_reason(notice::slow_down(10, 1024)).has_value());
  CHECK_FALSE(notice::session_end_reason(notice::commands_ignored(5)).has_value());
  CHECK_FALSE(notice::session_end_reason(notice::left("server fullness", false)).has_value());
  CHECK_FALSE(notice::session_end_reason(notice::relay("Client 1", "* server full")).has_value());
  CHECK_FALSE(notice::session_end_reason("").has_value());
}

TEST_CASE("message ids: lines, /since arguments and the /cap answer read back") {
  std::string line;
  mux::chat::append_relay_with_id(line, 42, "alice", "hi @7 there");
  CHECK(line == "@42 [alice]: hi @7 there\n");
  auto parsed = mux::chat::parse_id_line(std::string_view(line).substr(0, line.size() - 1));
  REQUIRE(parsed);
  CHECK(parsed->id == 42);
  CHECK(parsed->rest == "[alice]: hi @7 there");
  CHECK_FALSE(mux::chat::parse_id_line("@x [a]: b"));
  CHECK_FALSE(mux::chat::parse_id_line("@12 a: b"));
  CHECK_FALSE(mux::chat::parse_id_line("[a]: b"));
  auto since = mux::chat::parse_since("00ff 17");
  REQUIRE(since);
  CHECK(since->epoch == "00ff");
  CHECK(since->id == 17);
  CHECK_FALSE(mux::chat::parse_since("00ff"));
  CHECK_FALSE(mux::chat::parse_since("XYZ 1"));
  CHECK_FALSE(mux::chat::parse_since("00ff -1"));
  std::string secret = "00112233445566778899aabbccddeeff";
  std::string answer = mux::chat::notice::cap_ids("0a1b", 9, 4096, secret);
  answer.pop_back();  // the newline
  auto cap = mux::chat::parse_cap_reply(answer);
  REQUIRE(cap);
  CHECK(cap->epoch == "0a1b");
  CHECK(cap->last == 9);
  CHECK(cap->max_line == 4096);
  CHECK(cap->secret == secret);
  // An older server's answer has no secret.
  cap = mux::chat::parse_cap_reply("* cap ids epoch=0a1b last=9 max-line=100");
  REQUIRE(cap);
  CHECK(cap->max_line == 100);
  CHECK(cap->secret.empty());
  CHECK_FALSE(mux::chat::parse_cap_reply("* cap ids epoch=0a1b last=9"));
  CHECK_FALSE(mux::chat::parse_cap_reply("* cap ids epoch=0a1b last=9 max-line=100 secret=XY"));
  std::string argument = "alice  " + secret;
  auto reclaim = mux::chat::parse_reclaim(argument);
  REQUIRE(reclaim);
  CHECK(reclaim->nick == "alice");
  CHECK(reclaim->secret == secret);
  CHECK_FALSE(mux::chat::parse_reclaim("alice"));
  CHECK_FALSE(mux::chat::parse_reclaim("alice a b"));
  CHECK(mux::chat::same_secret(secret, secret));
  CHECK_FALSE(mux::chat::same_secret(secret, "00112233445566778899aabbccddeefe"));
  CHECK_FALSE(mux::chat::same_secret(secret, "0011"));
}

TEST_CASE("split_line cuts on character boundaries and keeps pieces messages") {
  using mux::chat::split_line;
  CHECK(split_line("short", 10) == std::vector<std::string>{"short"});
  CHECK(split_line("abcdefghijkl", 8) == std::vector<std::string>{"abcdefgh", "ijkl"});
  // "é" is two bytes: never cut in half.
  CHECK(split_line("abcdefg\xc3\xa9xyz", 8) == std::vector<std::string>{"abcdefg", "\xc3\xa9xyz"});
  // A piece that would start with '/' is escaped so it is not a command.
  CHECK(split_line("abcdefgh/nick x", 8) == std::vector<std::string>{"abcdefgh", "//nick x"});
  std::string big(10000, 'y');
  auto pieces = split_line(big, 4096);
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[0].size() == 4096);
  CHECK(pieces[2].size() == 10000 - 8192);
}
