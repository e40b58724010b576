// NickRules: which nicks look alike (UTS #39 skeletons through ICU) and which are refused alone.
#include <doctest/doctest.h>

#include <string>

#include "chat/nick_rules.hpp"

using mux::chat::NickRules;

TEST_CASE("look-alikes share a key") {
  NickRules rules;
  auto key = [&](const std::string& nick) { return rules.look_alike_key(nick); };
  CHECK(key("alice") == key("ALICE"));
  CHECK(key("alice") == key("\xD0\xB0lice"));      // Cyrillic а
  CHECK(key("alice") == key("\xEF\xBD\x81lice"));  // full-width ａ
  CHECK(key("bob_1") == key("bob-l"));             // separators go, 1 looks like l
  CHECK(key("modern") == key("rnodern"));          // rn looks like m
  CHECK(key("Client") == key("CIient"));           // capital I looks like l
  CHECK(key("alice") != key("alicia"));
  CHECK(key("<3") != key(":)"));                              // symbols only: compared as they are
  CHECK(key("\xF0\x9F\x90\xB1") != key("\xF0\x9F\x90\xB6"));  // two different emoji
}

TEST_CASE("nicks that pose as a default name are refused") {
  NickRules rules;
  for (const char* nick : {"Client3", "client3", "Client_1", "Client-12", "CLIENT", "Clientl",
                           "CIient7", "Cli\xD0\xB5nt3", "\xEF\xBC\xA3lient3", "Client\xD9\xA3"}) {
    CAPTURE(nick);
    CHECK(rules.problem(nick).has_value());
  }
  CHECK_FALSE(rules.problem("Clientele").has_value());
  CHECK_FALSE(rules.problem("client_bob").has_value());
}

TEST_CASE("mixed scripts, repeated or piled-up marks and mixed digits are refused") {
  NickRules rules;
  CHECK(*rules.problem("\xD0\xB0lice") == "it mixes scripts (such as Latin and Cyrillic)");
  std::string smear = "a";
  for (const char* mark : {"\xCC\x81", "\xCC\x82", "\xCC\x83", "\xCC\x84", "\xCC\x86", "\xCC\x87",
                           "\xCC\x88", "\xCC\x8A", "\xCC\x8B", "\xCC\x8C"})
    smear += mark;
  CHECK(*rules.problem(smear) == "more than 2 combining marks on one character");
  CHECK(rules.problem("a\xCC\x81\xCC\x81").has_value());  // the same mark twice
  CHECK(rules.problem("x1\xD9\xA3").has_value());         // ASCII and Arabic-Indic digits
}

TEST_CASE("ordinary nicks in one script pass") {
  NickRules rules;
  for (const char* nick : {"alice", "Bob_42", "[away]", "jos\xC3\xA9",
                           "jos"
                           "e\xCC\x81",
                           "\xD0\xB0\xD0\xBB\xD0\xB8\xD1\x81\xD0\xB0",  // алиса
                           "\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x90\xB1", "<3"}) {
    CAPTURE(nick);
    CHECK_FALSE(rules.problem(nick).has_value());
  }
}
