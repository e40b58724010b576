// The one sanitizer (core/base/sanitize): what a peer sends never reaches a terminal, a log line or
// a file name raw. The basic UTF-8 and control rules are also covered through chat::sanitize in
// test_chat_protocol.cpp; this file pins the rest and the file-name and log-field styles.
#include <doctest/doctest.h>

#include <string>

#include "core/base/sanitize.hpp"
#include "upload/upload_protocol.hpp"

using mux::kFileNameStyle;
using mux::log_field;
using mux::sanitized;

namespace {
const std::string kFFFD = "\xEF\xBF\xBD";
const std::string kRLO = "\xE2\x80\xAE";  // U+202E RIGHT-TO-LEFT OVERRIDE

bool valid_utf8(const std::string& text) {
  for (std::size_t at = 0; at < text.size();) {
    mux::Utf8Step step = mux::decode_utf8(text, at);
    if (!step.valid) return false;
    at += step.length;
  }
  return true;
}
}  // namespace

TEST_CASE("bidi controls become U+FFFD") {
  CHECK(sanitized("txt" + kRLO + "exe.") == "txt" + kFFFD + "exe.");
  for (const char* bidi :
       {"\xD8\x9C", "\xE2\x80\x8E", "\xE2\x80\x8F", "\xE2\x80\xAA", "\xE2\x80\xAB", "\xE2\x80\xAC",
        "\xE2\x80\xAD", "\xE2\x81\xA6", "\xE2\x81\xA7", "\xE2\x81\xA8", "\xE2\x81\xA9"}) {
    CAPTURE(bidi);
    CHECK(sanitized(std::string("a") + bidi + "b") == "a" + kFFFD + "b");
  }
}

TEST_CASE("zero-width and invisible formatting characters become U+FFFD") {
  for (const char* invisible :
       {"\xC2\xAD", "\xE2\x80\x8B", "\xE2\x80\x8C", "\xE2\x80\x8D", "\xE2\x81\xA0", "\xEF\xBB\xBF",
        "\xE3\x85\xA4", "\xE2\x80\xA8", "\xF3\xA0\x80\x81"}) {
    CAPTURE(invisible);
    CHECK(sanitized(std::string("a") + invisible + "b") == "a" + kFFFD + "b");
  }
  // Visible neighbours of those ranges pass.
  CHECK(sanitized("\xE2\x80\x90") == "\xE2\x80\x90");  // U+2010 HYPHEN
  CHECK(sanitized("\xE2\x80\xB0") == "\xE2\x80\xB0");  // U+2030 PER MILLE
  // A variation selector only picks the emoji form of the heart: kept.
  CHECK(sanitized("\xE2\x9D\xA4\xEF\xB8\x8F") == "\xE2\x9D\xA4\xEF\xB8\x8F");
}

TEST_CASE("C1 as a raw byte or as U+0080..U+009F never passes") {
  CHECK(sanitized("\x9B"
                  "31m") == kFFFD + "31m");
  CHECK(sanitized("\xC2\x9B"
                  "31m") == kFFFD + "31m");
  CHECK(sanitized("\xC2\x85") == kFFFD);  // NEL
}

TEST_CASE("the output is valid UTF-8 for every byte pair") {
  for (int first = 0; first < 256; ++first) {
    for (int second = 0; second < 256; second += 7) {
      std::string raw{static_cast<char>(first), static_cast<char>(second), '\xE2', '\x80'};
      std::string out = sanitized(raw);
      CAPTURE(first);
      CAPTURE(second);
      CHECK(valid_utf8(out));
      for (unsigned char c : out) {
        bool printable = (c >= 0x20 || c == '\t') && c != 0x7F;
        CHECK(printable);
      }
    }
  }
}

TEST_CASE("the file-name style makes every replaced thing '_', TAB too") {
  CHECK(sanitized("a\tb\x1b" + kRLO + "c\xFF", kFileNameStyle) == "a_b__c_");
  CHECK(sanitized("\xC0\xAF", kFileNameStyle) == "__");  // an overlong '/' is not a '/'
}

TEST_CASE("upload file names go through the one sanitizer") {
  using mux::sanitize_file_name;
  CHECK(sanitize_file_name("invoice" + kRLO + "fdp.exe", "fb") == "invoice_fdp.exe");
  CHECK(sanitize_file_name("a\x9B"
                           "b\xC2\x9B"
                           "c",
                           "fb") == "a_b_c");
  CHECK(sanitize_file_name("\xC0\xAE\xC0\xAE", "fb") == "____");  // overlong ".." is not ".."
  CHECK(sanitize_file_name("x\xE2\x80\x8B.txt", "fb") == "x_.txt");
  CHECK(sanitize_file_name(kRLO, "fb") == "_");
  CHECK(sanitize_file_name(".\xE2\x80\xAE", "fb") == "_");
  CHECK(sanitize_file_name("caf\xC3\xA9.txt", "fb") == "caf\xC3\xA9.txt");
  // The contract: never a '/', never a leading '.', at most kMaxStoredName bytes, never empty.
  for (int byte = 0; byte < 256; ++byte) {
    std::string name = sanitize_file_name(std::string(250, static_cast<char>(byte)), "fb");
    CAPTURE(byte);
    CHECK(!name.empty());
    CHECK(name.find('/') == std::string::npos);
    CHECK(name.front() != '.');
    CHECK(name.size() <= mux::kMaxStoredName);
    CHECK(valid_utf8(name));
  }
}

TEST_CASE("a log field is sanitized and bounded") {
  CHECK(log_field("plain") == "plain");
  CHECK(log_field("a\nb\x1b" + kRLO) == "a^Jb^[" + kFFFD);
  CHECK(log_field(std::string(300, 'x')) == std::string(200, 'x') + "...");
  CHECK(log_field(std::string(10, '\x01'), 8) == "^A^A^A^A...");
  std::string accents;
  for (int i = 0; i < 10; ++i)
    accents += "\xC3\xA9";
  CHECK(log_field(accents, 5) == "\xC3\xA9\xC3\xA9...");
}
