// UploadParser, the server's MUXUP/1 state machine, driven with plain strings: every input is
// also fed one byte at a time, so the result cannot depend on how the bytes were split.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "upload/upload_parser.hpp"

using mux::UploadFailure;
using mux::UploadParser;
using mux::UploadStep;

namespace {

// Everything a parser produced over a whole stream, collected.
struct Outcome {
  int starts = 0;
  bool raw = false;
  std::optional<std::uint64_t> size;
  std::string name;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string body;
  bool complete = false;
  UploadFailure failure = UploadFailure::none;
  std::string reason;
};

void collect(const UploadStep& step, Outcome& out) {
  if (step.start) {
    ++out.starts;
    out.raw = !step.start->header;
    if (step.start->header) {
      out.size = step.start->header->size;
      out.name = step.start->header->name;
      out.fields = step.start->header->fields;
    }
  }
  out.body.append(step.held);
  out.body.append(step.body);
  out.complete = out.complete || step.complete;
  if (step.failure != UploadFailure::none) {
    out.failure = step.failure;
    out.reason = step.reason;
  }
}

Outcome run(const std::string& stream, bool eof, std::size_t piece, std::uint64_t max_size) {
  UploadParser parser(max_size);
  Outcome out;
  for (std::size_t at = 0; at < stream.size(); at += piece) {
    collect(parser.feed(std::string_view(stream).substr(at, piece)), out);
  }
  if (eof) collect(parser.end_of_input(), out);
  return out;
}

// Runs the stream whole and byte by byte, checks both agree, returns the outcome.
Outcome parse(const std::string& stream, bool eof = true, std::uint64_t max_size = 0) {
  Outcome whole = run(stream, eof, stream.size() + 1, max_size);
  Outcome split = run(stream, eof, 1, max_size);
  CHECK(whole.starts == split.starts);
  CHECK(whole.raw == split.raw);
  CHECK(whole.size == split.size);
  // A refused stream may have delivered some body before the refusal, more when split finely.
  if (whole.failure == UploadFailure::none) CHECK(whole.body == split.body);
  CHECK(whole.complete == split.complete);
  CHECK(whole.failure == split.failure);
  CHECK(whole.reason == split.reason);
  return whole;
}

}  // namespace

TEST_CASE("a header, exactly size bytes, complete without waiting for EOF") {
  Outcome out = parse("MUXUP/1 5 notes%20a.txt\nhello", false);
  CHECK(out.starts == 1);
  CHECK_FALSE(out.raw);
  CHECK(out.size == 5);
  CHECK(out.name == "notes a.txt");
  CHECK(out.body == "hello");
  CHECK(out.complete);
  CHECK(out.failure == UploadFailure::none);
}

TEST_CASE("bytes after the announced size are ignored") {
  Outcome out = parse("MUXUP/1 3 x\nabcdef");
  CHECK(out.body == "abc");
  CHECK(out.complete);
}

TEST_CASE("a zero-byte upload completes at the newline") {
  Outcome out = parse("MUXUP/1 0 empty\n", false);
  CHECK(out.complete);
  CHECK(out.body.empty());
}

TEST_CASE("size - is a stream of unknown length that ends at EOF") {
  Outcome open = parse("MUXUP/1 - piped.log\nsome text", false);
  CHECK_FALSE(open.size);
  CHECK(open.body == "some text");
  CHECK_FALSE(open.complete);
  Outcome closed = parse("MUXUP/1 - piped.log\nsome text");
  CHECK(closed.complete);
  CHECK(closed.body == "some text");
}

TEST_CASE("key=value fields after the name are collected, unknown ones ignored") {
  Outcome out = parse("MUXUP/1 2 f token=abc%3D future=1 empty=\nhi");
  CHECK(out.name == "f");
  REQUIRE(out.fields.size() == 3);
  CHECK(out.fields[0] == std::pair<std::string, std::string>{"token", "abc%3D"});
  CHECK(out.fields[1] == std::pair<std::string, std::string>{"future", "1"});
  CHECK(out.fields[2] == std::pair<std::string, std::string>{"empty", ""});
  CHECK(out.body == "hi");
  CHECK(out.complete);
}

TEST_CASE("malformed fields make a bad header") {
  CHECK(parse("MUXUP/1 2 f token\nhi").reason == "bad header: field 1 is not key=value");
  CHECK(parse("MUXUP/1 2 f a=1 =2\nhi").reason == "bad header: field 2 is not key=value");
  CHECK(parse("MUXUP/1 2 f a=1 a=2\nhi").reason == "bad header: field 2 repeats a key");
  CHECK(parse("MUXUP/1 2 f \nhi").reason == "bad header: field 1 is not key=value");
}

TEST_CASE("a stream that does not start with the magic is a raw upload, prefix included") {
  for (const std::string stream : {"hello world", "MUXUP/2 5 x\nhello", "MUXUP/1", "M", "MUX\n",
                                   "GETTING STARTED\nread me", "GET /x\nnot http"}) {
    CAPTURE(stream);
    Outcome out = parse(stream);
    CHECK(out.starts == 1);
    CHECK(out.raw);
    CHECK(out.body == stream);
    CHECK(out.complete);
  }
}

TEST_CASE("a raw upload is not complete before EOF") {
  Outcome out = parse("just bytes", false);
  CHECK(out.raw);
  CHECK(out.body == "just bytes");
  CHECK_FALSE(out.complete);
}

TEST_CASE("an HTTP request line is refused before anything starts") {
  Outcome out = parse("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\necho pwned", false);
  CHECK(out.starts == 0);
  CHECK(out.failure == UploadFailure::http_request);
  CHECK(out.reason == "refused: an HTTP POST request is not an upload");
  CHECK(out.body.empty());
  CHECK(parse("GET / HTTP/1.0\n").failure == UploadFailure::http_request);
}

TEST_CASE("a raw upload starting with GET but no request line ends at EOF") {
  Outcome out = parse("GET /x HTTP/1.1");  // no newline before EOF: not a request line
  CHECK(out.raw);
  CHECK(out.body == "GET /x HTTP/1.1");
  CHECK(out.complete);
  std::string long_line = "GET /" + std::string(5000, 'a') + " HTTP/1.1\n";
  Outcome long_out = parse(long_line);
  CHECK(long_out.raw);
  CHECK(long_out.body == long_line);
}

TEST_CASE("a known size that does not arrive is incomplete") {
  Outcome out = parse("MUXUP/1 10 x\nabc");
  CHECK(out.failure == UploadFailure::incomplete);
  CHECK(out.reason == "incomplete: only 3 of 10 bytes arrived");
  CHECK_FALSE(out.complete);
}

TEST_CASE("header errors keep their reasons") {
  CHECK(parse("MUXUP/1 12x name\nhello").reason == "bad header: size is not a number");
  CHECK(parse("MUXUP/1 5\nhello").reason == "bad header: missing name");
  CHECK(parse("MUXUP/1  x\n").reason == "bad header: missing size");
  CHECK(parse("MUXUP/1 18446744073709551616 x\n").reason == "bad header: size is not a number");
  CHECK(parse("MUXUP/1 5 na").reason == "bad header: the connection ended inside the header line");
  Outcome long_header = parse("MUXUP/1 5 " + std::string(5000, 'n'), false);
  CHECK(long_header.failure == UploadFailure::bad_header);
  CHECK(long_header.reason == "bad header: line longer than 4096 bytes");
}

TEST_CASE("the header line limit counts the magic and the newline") {
  std::string prefix = "MUXUP/1 1 ";
  std::string fits = prefix + std::string(4096 - prefix.size() - 1, 'n') + "\nx";
  CHECK(parse(fits).complete);
  std::string too_long = prefix + std::string(4096 - prefix.size(), 'n') + "\nx";
  CHECK(parse(too_long).failure == UploadFailure::bad_header);
}

TEST_CASE("max size: an announced size over it is refused at once, a stream when it passes it") {
  Outcome announced = parse("MUXUP/1 11 big\n", false, 10);
  CHECK(announced.starts == 1);
  CHECK(announced.failure == UploadFailure::too_large);
  CHECK(announced.reason == "too large: 11 bytes, the limit is 10");
  Outcome exact = parse("MUXUP/1 10 ok\n0123456789", false, 10);
  CHECK(exact.complete);
  Outcome raw = parse("0123456789A", false, 10);
  CHECK(raw.failure == UploadFailure::too_large);
  CHECK(raw.reason == "too large: more than the limit of 10 bytes");
  Outcome unknown = parse("MUXUP/1 - s\n0123456789", true, 10);
  CHECK(unknown.complete);
  CHECK(parse("MUXUP/1 - s\n0123456789A", true, 10).failure == UploadFailure::too_large);
}

TEST_CASE("counts never wrap: the largest size is accepted and counted") {
  UploadParser parser;
  UploadStep step = parser.feed("MUXUP/1 18446744073709551615 x\nabc");
  CHECK(parser.expected_size() == UINT64_MAX);
  CHECK(std::string(step.held) + std::string(step.body) == "abc");
  CHECK(parser.received() == 3);
  CHECK_FALSE(step.complete);
}

TEST_CASE("nothing at all is not an upload; bytes after the end change nothing") {
  UploadParser empty;
  UploadStep step = empty.end_of_input();
  CHECK_FALSE(empty.any_bytes());
  CHECK_FALSE(step.start);
  CHECK_FALSE(step.complete);
  UploadParser done;
  CHECK(done.feed("MUXUP/1 1 x\nab").complete);
  CHECK(done.feed("more").body.empty());
  CHECK_FALSE(done.end_of_input().complete);
  CHECK(done.state() == UploadParser::State::done);
}

TEST_CASE("a TLS ClientHello on the plaintext port is refused, nothing started") {
  // A record header (handshake, TLS 1.0 record version, length 0x200) and ClientHello type 1.
  std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  Outcome out = parse(hello, false);
  CHECK(out.failure == UploadFailure::tls_hello);
  CHECK(out.starts == 0);
  CHECK(out.body.empty());
  CHECK(out.reason == "refused: a TLS ClientHello on a plaintext port");
}

TEST_CASE("bytes that only begin like a TLS record are a raw upload") {
  SUBCASE("not a ClientHello (handshake type 2)") {
    std::string data("\x16\x03\x01\x00\x10\x02rest", 10);
    Outcome out = parse(data);
    CHECK(out.failure == UploadFailure::none);
    CHECK(out.raw);
    CHECK(out.body == data);
  }
  SUBCASE("fewer bytes than it takes to tell, then EOF") {
    std::string data("\x16\x03\x01", 3);
    Outcome out = parse(data);
    CHECK(out.raw);
    CHECK(out.complete);
    CHECK(out.body == data);
  }
  SUBCASE("0x16 followed by text") {
    Outcome out = parse("\x16hello");
    CHECK(out.raw);
    CHECK(out.body == "\x16hello");
  }
}

TEST_CASE("batch: a complete upload says what it consumed; the rest is the next header") {
  UploadParser parser;
  std::string input = "MUXUP/1 3 a batch=1\nabcMUXUP/1 2 b batch=1\nxyMUX";
  UploadStep first = parser.feed(input);
  REQUIRE(first.complete);
  CHECK(first.body == "abc");
  CHECK(first.consumed == std::string("MUXUP/1 3 a batch=1\nabc").size());
  parser.next_upload();
  CHECK_FALSE(parser.any_bytes());
  std::string_view rest = std::string_view(input).substr(first.consumed);
  UploadStep second = parser.feed(rest);
  REQUIRE(second.start);
  CHECK(second.start->header->name == "b");
  CHECK(second.body == "xy");
  REQUIRE(second.complete);
  parser.next_upload();
  UploadStep third = parser.feed(rest.substr(second.consumed));  // "MUX": a magic, split
  CHECK_FALSE(third.complete);
  CHECK(third.failure == UploadFailure::none);
  UploadStep after = parser.feed("UP/1 0 c batch=1 dir=1\n");
  CHECK(after.complete);
  parser.next_upload();
  CHECK(parser.end_of_input().failure == UploadFailure::none);  // the batch's end
}

TEST_CASE("batch: a next upload that is not a header is refused") {
  UploadParser parser;
  REQUIRE(parser.feed("MUXUP/1 1 a batch=1\nx").complete);
  parser.next_upload();
  UploadStep step = parser.feed("GET / HTTP/1.1\r\n");
  CHECK(step.failure == UploadFailure::bad_header);
  CHECK(step.reason == "bad header: the next upload of the batch does not start with MUXUP/1");
}

TEST_CASE("batch: bytes that arrive one at a time") {
  UploadParser parser;
  std::string input = "MUXUP/1 2 a batch=1\nhiMUXUP/1 1 b batch=1\n!";
  std::string body;
  int complete = 0;
  for (char c : input) {
    UploadStep step = parser.feed(std::string_view(&c, 1));
    body += step.body;
    CHECK(step.consumed == 1);
    if (step.complete) {
      ++complete;
      parser.next_upload();
    }
  }
  CHECK(complete == 2);
  CHECK(body == "hi!");
}

TEST_CASE("batch: the client's DONE between uploads is confirmed, split or whole") {
  UploadParser parser;
  REQUIRE(parser.feed("MUXUP/1 1 a batch=1\nx").complete);
  parser.next_upload();
  UploadStep part = parser.feed("DO");
  CHECK_FALSE(part.confirmed);
  CHECK(part.failure == UploadFailure::none);
  UploadStep done = parser.feed("NE\nMUXUP/1 1 b batch=1\ny");
  CHECK(done.confirmed);
  CHECK(done.consumed == 3);  // the rest is the next upload's
  UploadStep next = parser.feed("MUXUP/1 1 b batch=1\ny");
  CHECK(next.complete);
  parser.next_upload();
  REQUIRE(parser.feed("DONE\n").confirmed);
  CHECK(parser.end_of_input().failure == UploadFailure::none);  // the batch's end
}

TEST_CASE("batch: anything else starting with D is refused") {
  UploadParser parser;
  REQUIRE(parser.feed("MUXUP/1 1 a batch=1\nx").complete);
  parser.next_upload();
  CHECK(parser.feed("DONEX").failure == UploadFailure::bad_header);
}
