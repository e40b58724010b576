// UploadParser (the sans-IO MUXUP/1 state machine of upload-server) fed the same stream twice:
// whole, and cut into chunks. Each run must tell a coherent story (one start before any body,
// one ending, the body an exact slice of the input, the announced size kept, --max-size kept)
// and both runs must tell the same one: how the bytes were split by the network never matters.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "fuzz_check.hpp"
#include "targets.hpp"
#include "upload/upload_parser.hpp"
#include "upload/upload_protocol.hpp"

namespace mux::fuzz::upload_parser {
namespace {

constexpr std::uint64_t kMaxSizes[] = {0, 1, 7, 100, 4096, 1 << 20};

struct Outcome {
  int starts = 0;
  std::optional<UploadHeader> header;  // of the start, when it had one
  bool raw = false;
  std::string body;  // held + body of every step, in order
  bool complete = false;
  UploadFailure failure = UploadFailure::none;
  std::string reason;
  std::uint64_t received = 0;
  std::optional<std::uint64_t> resume_from;  // a resumable header's FROM line
};

std::string describe(const Outcome& outcome) {
  return fmt::format("starts {} raw {} body {} bytes complete {} failure {} reason '{}'",
                     outcome.starts, outcome.raw, outcome.body.size(), outcome.complete,
                     static_cast<int>(outcome.failure), outcome.reason);
}

void record(Outcome& outcome, const UploadStep& step, std::string_view input) {
  bool ended = outcome.complete || outcome.failure != UploadFailure::none;
  FUZZ_CHECK(!ended || (!step.start && step.held.empty() && step.body.empty() && !step.complete &&
                        step.failure == UploadFailure::none),
             "nothing happens after the end: " + printable(input));
  if (step.start) {
    ++outcome.starts;
    outcome.header = step.start->header;
    outcome.raw = !step.start->header.has_value();
  }
  if (!step.held.empty() || !step.body.empty())
    FUZZ_CHECK(outcome.starts == 1, "body bytes only after the start: " + printable(input));
  if (step.resume_from) {
    FUZZ_CHECK(!outcome.resume_from && outcome.starts == 1 && outcome.body.empty(),
               "one FROM line, after the start and before the body: " + printable(input));
    outcome.resume_from = step.resume_from;
  }
  outcome.body.append(step.held);
  outcome.body.append(step.body);
  FUZZ_CHECK(!(step.complete && step.failure != UploadFailure::none), printable(input));
  FUZZ_CHECK((step.failure != UploadFailure::none) == !step.reason.empty(), step.reason);
  if (step.complete) outcome.complete = true;
  if (step.failure != UploadFailure::none) {
    outcome.failure = step.failure;
    outcome.reason = step.reason;
  }
}

Outcome run(std::uint64_t max_size, std::string_view input, const std::vector<std::size_t>& cuts) {
  UploadParser parser(max_size);
  Outcome outcome;
  std::size_t at = 0;
  for (std::size_t cut : cuts) {
    record(outcome, parser.feed(input.substr(at, cut - at)), input);
    at = cut;
  }
  record(outcome, parser.feed(input.substr(at)), input);
  record(outcome, parser.end_of_input(), input);
  outcome.received = parser.received();
  FUZZ_CHECK(parser.any_bytes() == !input.empty(), printable(input));
  return outcome;
}

void check_story(const Outcome& outcome, std::uint64_t max_size, std::string_view input) {
  std::string context = describe(outcome) + " for " + printable(input);
  if (input.empty()) {
    FUZZ_CHECK(outcome.starts == 0 && !outcome.complete && outcome.failure == UploadFailure::none,
               context);
    return;
  }
  FUZZ_CHECK(outcome.starts <= 1, context);
  FUZZ_CHECK(outcome.complete != (outcome.failure != UploadFailure::none), context);
  // Where the body lies in the input.
  std::string_view stream = input;
  if (outcome.header) {
    FUZZ_CHECK(input.substr(0, kUploadMagic.size()) == kUploadMagic, context);
    std::size_t newline = input.find('\n');
    FUZZ_CHECK(newline != std::string_view::npos, context);
    HeaderParse parsed = parse_header_line(input.substr(0, newline));
    FUZZ_CHECK(parsed.header && parsed.header->size == outcome.header->size &&
                   parsed.header->name == outcome.header->name,
               context);
    stream = input.substr(newline + 1);
    // A header asking for an offer (resume=, resume-ask=1, a size): the client's FROM line comes
    // first, and the body
    // is the rest of the file from that offset.
    if (asks_resume_offer(*outcome.header)) {
      if (!outcome.resume_from) {
        FUZZ_CHECK(outcome.body.empty() && !outcome.complete, context);
        return;
      }
      std::size_t from_end = stream.find('\n');
      FUZZ_CHECK(from_end != std::string_view::npos && from_end < kMaxFromLine, context);
      FUZZ_CHECK(parse_resume_from(stream.substr(0, from_end)) == outcome.resume_from, context);
      FUZZ_CHECK(*outcome.resume_from <= *outcome.header->size, context);
      stream = stream.substr(from_end + 1);
      FUZZ_CHECK(stream.substr(0, outcome.body.size()) == outcome.body, context);
      if (!outcome.complete) return;
      FUZZ_CHECK(outcome.received == *outcome.resume_from + outcome.body.size(), context);
      FUZZ_CHECK(outcome.body.size() == *outcome.header->size - *outcome.resume_from, context);
      return;
    }
    FUZZ_CHECK(!outcome.resume_from, context);
  } else if (outcome.raw) {
    FUZZ_CHECK(input.substr(0, kUploadMagic.size()) != kUploadMagic, context);
  }
  FUZZ_CHECK(stream.substr(0, outcome.body.size()) == outcome.body,
             "body is not the input: " + context);
  if (!outcome.complete) return;
  FUZZ_CHECK(outcome.starts == 1, context);
  FUZZ_CHECK(outcome.received == outcome.body.size(), context);
  if (max_size != 0) FUZZ_CHECK(outcome.body.size() <= max_size, context);
  if (outcome.header && outcome.header->size) {
    FUZZ_CHECK(outcome.body.size() == *outcome.header->size, context);
  } else {
    FUZZ_CHECK(outcome.body == stream, "an upload ended by EOF is all of the rest: " + context);
  }
}

}  // namespace

// Layout: one byte picks --max-size, one byte seeds where the chunked run cuts, then the stream.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader reader(data, size);
  std::uint64_t max_size = kMaxSizes[reader.take_byte() % std::size(kMaxSizes)];
  std::uint32_t seed = reader.take_byte();
  std::string_view input = reader.take_rest();
  std::vector<std::size_t> cuts;
  for (std::size_t at = 0;;) {
    seed = seed * 1103515245u + 12345u;
    at += 1 + (seed >> 16) % 13;
    if (at >= input.size()) break;
    cuts.push_back(at);
  }
  Outcome whole = run(max_size, input, {});
  Outcome chunked = run(max_size, input, cuts);
  check_story(whole, max_size, input);
  check_story(chunked, max_size, input);
  std::string context = describe(whole) + " / " + describe(chunked) + " for " + printable(input);
  FUZZ_CHECK(whole.starts == chunked.starts && whole.raw == chunked.raw, context);
  FUZZ_CHECK(whole.complete == chunked.complete && whole.failure == chunked.failure, context);
  if (whole.failure != UploadFailure::too_large) {
    // Past --max-size, how much was taken before the refusal depends on the chunks.
    FUZZ_CHECK(whole.reason == chunked.reason, context);
    FUZZ_CHECK(whole.body == chunked.body && whole.received == chunked.received, context);
    FUZZ_CHECK(whole.resume_from == chunked.resume_from, context);
  }
}

}  // namespace mux::fuzz::upload_parser
