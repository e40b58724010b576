#include "upload/upload_parser.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "core/base/http_sniff.hpp"

namespace mux {
namespace {

// Detection looks at no more than the longest HTTP request line it would refuse; the MUXUP/1
// magic is far shorter.
constexpr std::size_t kMaxDetectBytes = kMaxHttpRequestLine;

bool could_be_magic(std::string_view prefix) {
  std::size_t n = std::min(prefix.size(), kUploadMagic.size());
  return prefix.substr(0, n) == kUploadMagic.substr(0, n);
}

// A TLS record header for a handshake (0x16, version 3.x, a length) whose message is a
// ClientHello (type 1): six bytes no text and hardly any file starts with.
constexpr std::size_t kTlsHelloPrefix = 6;

bool could_be_tls_hello(std::string_view prefix) {
  auto byte = [&prefix](std::size_t at) { return static_cast<unsigned char>(prefix[at]); };
  if (prefix.empty() || byte(0) != 0x16) return false;
  if (prefix.size() > 1 && byte(1) != 0x03) return false;
  if (prefix.size() > 2 && byte(2) > 0x04) return false;
  return prefix.size() < kTlsHelloPrefix || byte(5) == 0x01;
}

}  // namespace

UploadStep UploadParser::feed(std::string_view input) {
  UploadStep step;
  if (input.empty()) return step;
  any_bytes_ = true;
  std::string_view bytes = input;
  if (state_ == State::detecting) detect(bytes, step);
  if (state_ == State::magic) consume_magic(bytes, step);
  if (state_ == State::header) bytes = consume_header(bytes, step);
  if (state_ == State::resume_line) bytes = consume_resume_line(bytes, step);
  if (state_ == State::body) {
    step.body = take_body(bytes, step);
    bytes.remove_prefix(std::min(step.body.size(), bytes.size()));
  }
  // A failure ignores the rest; a complete upload leaves it to the next one of a batch.
  step.consumed = state_ == State::failed ? input.size() : input.size() - bytes.size();
  return step;
}

void UploadParser::next_upload() {
  state_ = State::magic;
  any_bytes_ = false;
  held_.clear();
  header_line_.clear();
  resume_line_.clear();
  expected_.reset();
  received_ = 0;
}

void UploadParser::consume_magic(std::string_view& bytes, UploadStep& step) {
  if (kDoneLine.starts_with(held_) && !bytes.empty() && (!held_.empty() || bytes[0] == 'D')) {
    std::size_t take = std::min(bytes.size(), kDoneLine.size() - held_.size());
    held_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (!kDoneLine.starts_with(held_)) {
      fail(step, UploadFailure::bad_header,
           "bad header: the next upload of the batch does not start with MUXUP/1");
      return;
    }
    if (held_.size() < kDoneLine.size()) return;
    held_.clear();
    step.confirmed = true;
    any_bytes_ = false;  // what follows is a next upload, or the batch's end
    return;
  }
  std::size_t take = std::min(bytes.size(), kUploadMagic.size() - held_.size());
  held_.append(bytes.substr(0, take));
  bytes.remove_prefix(take);
  if (!could_be_magic(held_)) {
    fail(step, UploadFailure::bad_header,
         "bad header: the next upload of the batch does not start with MUXUP/1");
    return;
  }
  if (held_.size() < kUploadMagic.size()) return;
  held_.clear();
  state_ = State::header;
}

void UploadParser::detect(std::string_view& bytes, UploadStep& step) {
  // The first few KiB are copied while undecided; the decision almost always takes 8 bytes.
  std::size_t take = std::min(bytes.size(), kMaxDetectBytes - held_.size());
  held_.append(bytes.substr(0, take));
  bytes.remove_prefix(take);
  // (bytes still points into the caller's input: the magic path below steps back into it.)
  if (held_.size() >= kUploadMagic.size() && could_be_magic(held_)) {
    // Detection decides as soon as 8 bytes are in, so what an earlier feed held lies within the
    // magic: every byte past it came with this input and goes back to it, for the header path
    // (and, in a batch, for the uploads after this one).
    std::size_t past_magic = held_.size() - kUploadMagic.size();
    bytes = std::string_view(bytes.data() - past_magic, bytes.size() + past_magic);
    held_.clear();
    state_ = State::header;
    return;
  }
  if (could_be_tls_hello(held_)) {
    if (held_.size() < kTlsHelloPrefix) return;  // need more bytes to tell
    fail(step, UploadFailure::tls_hello, "refused: a TLS ClientHello on a plaintext port");
    return;
  }
  HttpSniff http = sniff_http_request(held_);
  if (http == HttpSniff::http_request) {
    std::string_view method = std::string_view(held_).substr(0, held_.find(' '));
    fail(step, UploadFailure::http_request,
         fmt::format("refused: an HTTP {} request is not an upload", method));
    return;
  }
  if (http == HttpSniff::http_header) {
    fail(step, UploadFailure::http_request, "refused: an HTTP Host header is not an upload");
    return;
  }
  if (could_be_magic(held_) || http == HttpSniff::need_more) {
    if (held_.size() < kMaxDetectBytes) return;  // need more bytes to tell
  }
  start_body(step, std::nullopt);
  step.held = take_body(held_, step);
}

std::string_view UploadParser::consume_header(std::string_view bytes, UploadStep& step) {
  std::size_t newline = bytes.find('\n');
  std::size_t line_part = newline == std::string_view::npos ? bytes.size() : newline;
  // The limit counts the magic and the '\n': the line without '\n' is at most kMaxHeaderLine - 1.
  if (kUploadMagic.size() + header_line_.size() + line_part >= kMaxHeaderLine) {
    fail(step, UploadFailure::bad_header,
         fmt::format("bad header: line longer than {} bytes", kMaxHeaderLine));
    return {};
  }
  header_line_.append(bytes.substr(0, line_part));
  if (newline == std::string_view::npos) return {};
  HeaderParse parsed = parse_header_line(std::string(kUploadMagic) + header_line_);
  if (!parsed.header) {
    fail(step, UploadFailure::bad_header, fmt::format("bad header: {}", parsed.error));
    return {};
  }
  std::optional<std::uint64_t> size = parsed.header->size;
  if (size && max_size_ != 0 && *size > max_size_) {
    step.start = UploadStart{std::move(parsed.header)};
    fail(step, UploadFailure::too_large,
         fmt::format("too large: {} bytes, the limit is {}", *size, max_size_));
    return {};
  }
  bool resumable = asks_resume_offer(*parsed.header);
  start_body(step, std::move(parsed.header));
  if (resumable) {
    state_ = State::resume_line;
  } else if (expected_ == 0) {
    state_ = State::done;
    step.complete = true;
  }
  return bytes.substr(newline + 1);
}

std::string_view UploadParser::consume_resume_line(std::string_view bytes, UploadStep& step) {
  std::size_t newline = bytes.find('\n');
  std::size_t line_part = newline == std::string_view::npos ? bytes.size() : newline;
  if (resume_line_.size() + line_part >= kMaxFromLine) {
    fail(step, UploadFailure::bad_header, "bad header: the FROM line is too long");
    return {};
  }
  resume_line_.append(bytes.substr(0, line_part));
  if (newline == std::string_view::npos) return {};
  std::optional<std::uint64_t> from = parse_resume_from(resume_line_);
  if (!from || *from > *expected_) {
    fail(step, UploadFailure::bad_header, "bad header: not a FROM <offset> line");
    return {};
  }
  received_ = *from;
  step.resume_from = *from;
  state_ = State::body;
  if (received_ == *expected_) {
    state_ = State::done;
    step.complete = true;
  }
  return bytes.substr(newline + 1);
}

void UploadParser::start_body(UploadStep& step, std::optional<UploadHeader> header) {
  if (header) expected_ = header->size;
  step.start = UploadStart{std::move(header)};
  state_ = State::body;
}

std::string_view UploadParser::take_body(std::string_view bytes, UploadStep& step) {
  if (state_ != State::body || bytes.empty()) return {};
  if (expected_) {
    // Bytes after the announced size are not part of the upload; they are ignored.
    std::uint64_t remaining = *expected_ - received_;
    if (bytes.size() > remaining) bytes = bytes.substr(0, static_cast<std::size_t>(remaining));
    received_ += bytes.size();
    if (received_ == *expected_) {
      state_ = State::done;
      step.complete = true;
    }
    return bytes;
  }
  // Subtraction, not addition: received_ never exceeds max_size_ here, so nothing can wrap.
  if (max_size_ != 0 && bytes.size() > max_size_ - received_) {
    received_ += bytes.size();
    fail(step, UploadFailure::too_large,
         fmt::format("too large: more than the limit of {} bytes", max_size_));
    return {};
  }
  received_ += bytes.size();
  return bytes;
}

UploadStep UploadParser::end_of_input() {
  UploadStep step;
  switch (state_) {
    case State::magic:
      if (!any_bytes_) return step;  // a batch's end: nothing of a next upload
      fail(step, UploadFailure::bad_header,
           "bad header: the connection ended inside the header line");
      return step;
    case State::detecting:
      if (!any_bytes_) return step;  // nothing at all: not an upload
      // Fewer bytes than it takes to tell, e.g. "MUXUP/1" or "GET /": a tiny raw upload.
      start_body(step, std::nullopt);
      step.held = take_body(held_, step);
      break;
    case State::header:
      fail(step, UploadFailure::bad_header,
           "bad header: the connection ended inside the header line");
      return step;
    case State::resume_line:
      fail(step, UploadFailure::incomplete,
           fmt::format("incomplete: only 0 of {} bytes arrived", *expected_));
      return step;
    case State::body:
      break;
    default:
      return step;
  }
  if (state_ != State::body) return step;
  if (expected_) {
    fail(step, UploadFailure::incomplete,
         fmt::format("incomplete: only {} of {} bytes arrived", received_, *expected_));
  } else {
    state_ = State::done;
    step.complete = true;
  }
  return step;
}

void UploadParser::fail(UploadStep& step, UploadFailure failure, std::string reason) {
  state_ = State::failed;
  step.failure = failure;
  step.reason = std::move(reason);
  step.held = {};
  step.body = {};
}

}  // namespace mux
