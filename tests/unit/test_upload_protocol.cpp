// MUXUP/1 as pure functions: header lines, percent-encoding, file name sanitizing, replies, and
// the XXH3-128 text (checked against values printed by `xxhsum -H2`).
#include <doctest/doctest.h>

#include <string>

#include "upload/content_hash.hpp"
#include "upload/upload_protocol.hpp"

using mux::parse_header_line;
using mux::parse_reply_line;
using mux::sanitize_file_name;

TEST_CASE("a header line gives its size and percent-decoded name") {
  mux::HeaderParse parsed = parse_header_line("MUXUP/1 5 my%20notes%2Ftxt");
  REQUIRE(parsed.header);
  CHECK(parsed.header->size == 5);
  CHECK(parsed.header->name == "my notes/txt");
  CHECK(parsed.error.empty());
}

TEST_CASE("a header line tolerates CR before the newline and keeps an empty name") {
  mux::HeaderParse parsed = parse_header_line("MUXUP/1 18446744073709551615 x\r");
  REQUIRE(parsed.header);
  CHECK(parsed.header->size == 18446744073709551615ULL);
  CHECK(parsed.header->name == "x");
  parsed = parse_header_line("MUXUP/1 0 ");
  REQUIRE(parsed.header);
  CHECK(parsed.header->size == 0);
  CHECK(parsed.header->name.empty());
}

TEST_CASE("bad header lines say what is wrong") {
  CHECK(parse_header_line("MUXUP/1 abc x").error == "size is not a number");
  CHECK(parse_header_line("MUXUP/1 -5 x").error == "size is not a number");
  CHECK(parse_header_line("MUXUP/1 +5 x").error == "size is not a number");
  CHECK(parse_header_line("MUXUP/1 5k x").error == "size is not a number");
  CHECK(parse_header_line("MUXUP/1 18446744073709551616 x").error == "size is not a number");
  CHECK(parse_header_line("MUXUP/1 5").error == "missing name");
  CHECK(parse_header_line("MUXUP/1  x").error == "missing size");
  CHECK(parse_header_line("MUXUP/1 ").error == "missing size");
  CHECK(parse_header_line("MUXUP/2 5 x").error == "does not start with MUXUP/1");
  CHECK_FALSE(parse_header_line("MUXUP/1 5").header);
}

TEST_CASE("header lines are formatted with the name percent-encoded") {
  CHECK(mux::format_header_line(5, "a b.txt") == "MUXUP/1 5 a%20b.txt\n");
  CHECK(mux::format_header_line(0, "100%\n") == "MUXUP/1 0 100%25%0A\n");
  CHECK(mux::format_header_line(7, "Az09-._~") == "MUXUP/1 7 Az09-._~\n");
}

TEST_CASE("a size of - announces a stream of unknown length, both ways") {
  mux::HeaderParse parsed = mux::parse_header_line("MUXUP/1 - notes.tar");
  REQUIRE(parsed.header);
  CHECK_FALSE(parsed.header->size.has_value());
  CHECK(parsed.header->name == "notes.tar");
  CHECK(mux::format_header_line(std::nullopt, "a b") == "MUXUP/1 - a%20b\n");
  CHECK(mux::parse_header_line("MUXUP/1 -- x").error == "size is not a number");
  CHECK(mux::parse_header_line("MUXUP/1 -5 x").error == "size is not a number");
}

TEST_CASE("percent-encoding round-trips every byte") {
  std::string all;
  for (int byte = 0; byte < 256; ++byte)
    all.push_back(static_cast<char>(byte));
  std::string encoded = mux::percent_encode(all);
  CHECK(encoded.find(' ') == std::string::npos);
  CHECK(encoded.find('\n') == std::string::npos);
  CHECK(mux::percent_decode(encoded) == all);
}

TEST_CASE("percent-decoding keeps a stray percent sign as it is") {
  CHECK(mux::percent_decode("100%") == "100%");
  CHECK(mux::percent_decode("%zz") == "%zz");
  CHECK(mux::percent_decode("%4") == "%4");
  CHECK(mux::percent_decode("%41%62") == "Ab");
}

TEST_CASE("file names are sanitized to a plain name in the output directory") {
  CHECK(sanitize_file_name("report.pdf", "fb") == "report.pdf");
  CHECK(sanitize_file_name("../x", "fb") == "x");
  CHECK(sanitize_file_name("/etc/passwd", "fb") == "passwd");
  CHECK(sanitize_file_name("a\x01"
                           "b\nc\x7f",
                           "fb") == "a_b_c_");
  CHECK(sanitize_file_name(std::string("a\0b", 3), "fb") == "a_b");
  CHECK(sanitize_file_name(".bashrc", "fb") == "bashrc");
  CHECK(sanitize_file_name("...hidden", "fb") == "hidden");
  CHECK(sanitize_file_name("a..b", "fb") == "a..b");
}

TEST_CASE("names with nothing usable left fall back") {
  for (const char* name : {"", ".", "..", "...", "/", "dir/", "../..", "/.."}) {
    CAPTURE(name);
    CHECK(sanitize_file_name(name, "upload-3.bin") == "upload-3.bin");
  }
}

TEST_CASE("long names are cut, never inside a UTF-8 sequence") {
  CHECK(sanitize_file_name(std::string(300, 'a'), "fb") == std::string(mux::kMaxStoredName, 'a'));
  std::string accented = "a";
  for (int i = 0; i < 150; ++i)
    accented += "\xc3\xa9";  // é: two bytes each
  std::string cut = sanitize_file_name(accented, "fb");
  CHECK(cut.size() == mux::kMaxStoredName - 1);
  CHECK(cut.back() == '\xa9');
}

TEST_CASE("raw uploads are named after the client number") {
  CHECK(mux::raw_upload_name(7) == "upload-7.bin");
}

TEST_CASE("replies are formatted and parsed") {
  std::string hash = "b5e9c1ad071b3e7fc779cfaa5e523818";
  CHECK(mux::format_ok_reply(5, hash) == "OK 5 " + hash + "\n");
  CHECK(mux::format_err_reply("too large") == "ERR too large\n");
  CHECK(mux::format_err_reply("disk\nerror\r") == "ERR disk error \n");

  std::optional<mux::UploadReply> ok = parse_reply_line("OK 5 " + hash);
  REQUIRE(ok);
  CHECK(ok->ok);
  CHECK(ok->bytes == 5);
  CHECK(ok->hash == hash);

  std::optional<mux::UploadReply> err = parse_reply_line("ERR too large: 10 bytes");
  REQUIRE(err);
  CHECK_FALSE(err->ok);
  CHECK(err->reason == "too large: 10 bytes");
  REQUIRE(parse_reply_line("ERR"));
  CHECK(parse_reply_line("ERR")->reason.empty());
  CHECK_FALSE(ok->saved_name);
}

TEST_CASE("an OK reply may carry the saved name, and fields a client does not know") {
  std::string hash = "b5e9c1ad071b3e7fc779cfaa5e523818";
  CHECK(mux::format_ok_reply(5, hash, "a b.txt.1") == "OK 5 " + hash + " name=a%20b.txt.1\n");
  CHECK(mux::format_ok_reply(5, hash, "") == "OK 5 " + hash + "\n");

  std::optional<mux::UploadReply> named = parse_reply_line("OK 5 " + hash + " name=a%20b.txt.1");
  REQUIRE(named);
  CHECK(named->bytes == 5);
  CHECK(named->hash == hash);
  REQUIRE(named->saved_name);
  CHECK(*named->saved_name == "a b.txt.1");

  // A newer server's fields are ignored, before or after the name.
  std::optional<mux::UploadReply> newer =
      parse_reply_line("OK 5 " + hash + " took=3ms name=x.bin zone=eu\r");
  REQUIRE(newer);
  REQUIRE(newer->saved_name);
  CHECK(*newer->saved_name == "x.bin");
  std::optional<mux::UploadReply> unnamed = parse_reply_line("OK 5 " + hash + " took=3ms");
  REQUIRE(unnamed);
  CHECK_FALSE(unnamed->saved_name);

  for (std::string tail : {" ", "  name=x", " name", " =x", " name=x name=y", " name=x "}) {
    CAPTURE(tail);
    CHECK_FALSE(parse_reply_line("OK 5 " + hash + tail));
  }
}

TEST_CASE("the header asks for the saved name only when told to") {
  CHECK(mux::format_header_line(5, "a", {}, true) == "MUXUP/1 5 a reply-name=1\n");
  CHECK(mux::format_header_line(5, "a", "s3cret", true) ==
        "MUXUP/1 5 a token=s3cret reply-name=1\n");
  mux::HeaderParse parsed = mux::parse_header_line("MUXUP/1 5 a token=s3cret reply-name=1");
  REQUIRE(parsed.header);
  REQUIRE(parsed.header->field(mux::kReplyNameField));
  CHECK(*parsed.header->field(mux::kReplyNameField) == "1");
}

TEST_CASE("malformed replies are rejected") {
  for (const char* line : {"", "OK", "OK 5", "OK x b5e9c1ad071b3e7fc779cfaa5e523818",
                           "OK 5 b5e9c1ad071b3e7fc779cfaa5e52381",
                           "OK 5 B5E9C1AD071B3E7FC779CFAA5E523818", "HELLO", "ERRx"}) {
    CAPTURE(line);
    CHECK_FALSE(parse_reply_line(line));
  }
}

TEST_CASE("ContentHash prints XXH3-128 as xxhsum -H2 does") {
  mux::ContentHash empty;
  CHECK(empty.hex() == "99aa06d3014798d86001c324468d497f");
  mux::ContentHash whole;
  whole.update("hello", 5);
  CHECK(whole.hex() == "b5e9c1ad071b3e7fc779cfaa5e523818");
  mux::ContentHash pieces;
  pieces.update("he", 2);
  pieces.update("", 0);
  pieces.update("llo", 3);
  CHECK(pieces.hex() == whole.hex());
}

TEST_CASE("batch paths: each component is checked, nothing is repaired") {
  using mux::check_relative_path;
  CHECK(check_relative_path("a").empty());
  CHECK(check_relative_path("dir/sub/file.txt").empty());
  CHECK(check_relative_path(".hidden/ünïcode 名前").empty());
  CHECK(check_relative_path("") == "an empty path");
  CHECK(check_relative_path("/etc/passwd") == "an absolute path");
  CHECK(check_relative_path("..") == "component 1 is ..");
  CHECK(check_relative_path("a/../b") == "component 2 is ..");
  CHECK(check_relative_path("a/./b") == "component 2 is .");
  CHECK(check_relative_path("a//b") == "component 2 is empty");
  CHECK(check_relative_path("a/") == "component 2 is empty");
  CHECK(check_relative_path("a\nb") == "component 1 has a control character");
  CHECK(check_relative_path("a/\x7f") == "component 2 has a control character");
  CHECK(check_relative_path("a/\xff") ==
        "component 2 is not UTF-8 or has a bidi or invisible character");
  CHECK(check_relative_path("x/.mux-resume-1.part") ==
        "component 2 is named like the server's temporary files");
  CHECK(check_relative_path(std::string(201, 'x')) == "component 1 is longer than 200 bytes");
  std::string deep;
  for (int i = 0; i < 11; ++i)
    deep += std::string(99, 'd') + "/";
  deep += "f";
  CHECK(check_relative_path(deep) == "longer than 1024 bytes");
}

TEST_CASE("batch headers carry batch=1, and dir=1 for a directory") {
  CHECK(mux::format_batch_header(5, "d/a b", "", "", false, false, false) ==
        "MUXUP/1 5 d%2Fa%20b reply-name=1 batch=1\n");
  CHECK(mux::format_batch_header(9, "d", "tok", "", false, false, true) ==
        "MUXUP/1 0 d token=tok reply-name=1 batch=1 dir=1\n");
  std::string key(32, 'a');
  CHECK(mux::format_batch_header(7, "big", "", key, true, true, false) ==
        "MUXUP/1 7 big reply-name=1 resume=" + key + " resume-ask=1 ack=1 batch=1\n");
}
