// UploadParser: the server's side of MUXUP/1 as a state machine without I/O: bytes in, steps out
// (the upload starts, body bytes, complete, or the ERR reason). It tells a header from a raw
// stream, refuses an HTTP request line, enforces the header-line and --max-size limits and counts
// the body. UploadSession owns one per connection and does the I/O it asks for; unit tests and
// fuzzers drive it with plain strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "upload/upload_protocol.hpp"

namespace mux {

// How an upload began: with a MUXUP/1 header, or raw (the stream is the file, ended by EOF).
struct UploadStart {
  std::optional<UploadHeader> header;  // nullopt: raw
};

enum class UploadFailure {
  none,
  bad_header,    // not a valid header line, or the stream ended inside it
  too_large,     // announced or sent more than --max-size
  incomplete,    // ended before the announced size arrived
  http_request,  // the first line was an HTTP request line (see core/base/http_sniff.hpp)
  tls_hello,     // the first bytes were a TLS ClientHello: a TLS client on a plaintext port
};

// What one feed() or end_of_input() produced. Act on it in member order: start, then store
// `held` and `body` (in that order), then reply: OK when `complete`, ERR `reason` on a failure.
struct UploadStep {
  std::optional<UploadStart> start;
  std::string_view held;  // body bytes held back while detecting (valid until the next call)
  std::string_view body;  // body bytes within the input just fed
  // A header asking for a resume offer (`resume=` and `resume-ask=1`): the client's
  // `FROM <offset>` line arrived; the body continues
  // at that offset (received() counts from it). The server has answered RESUME before.
  std::optional<std::uint64_t> resume_from;
  bool complete = false;
  // A batch, between two uploads: the client's `DONE` line (it read every reply; see
  // kConfirmField). Nothing of an upload: the parser waits for the next header, or the end.
  bool confirmed = false;
  // Bytes of the input fed that belong to this upload (its header, FROM line and body). When it
  // is `complete`, the rest of the input is the next upload of a batch (see next_upload()).
  std::size_t consumed = 0;
  UploadFailure failure = UploadFailure::none;
  std::string reason;  // for ERR: "bad header: missing name", "too large: ...", ...
};

class UploadParser {
 public:
  enum class State {
    detecting,    // not yet known whether a header, a raw upload or an HTTP request follows
    magic,        // a batch's next upload: only a MUXUP/1 header may follow
    header,       // inside the header line
    resume_line,  // a header that asked for an offer: reading the client's `FROM <offset>` line
    body,
    done,    // complete: every further byte is ignored
    failed,  // refused: every further byte is ignored
  };

  // max_size 0: no limit.
  explicit UploadParser(std::uint64_t max_size = 0) : max_size_(max_size) {}

  UploadStep feed(std::string_view bytes);
  // The client half-closed: a raw or unknown-length upload is complete, anything else is not.
  UploadStep end_of_input();

  // A batch (batch=1): the upload is complete and replied to; the next one starts with its own
  // header (no raw upload or HTTP request may follow).
  void next_upload();

  [[nodiscard]] State state() const noexcept { return state_; }
  // Whether any byte arrived (a connection that sent nothing is not an upload at all).
  [[nodiscard]] bool any_bytes() const noexcept { return any_bytes_; }
  // Body bytes counted so far (including ones past --max-size that caused the refusal).
  [[nodiscard]] std::uint64_t received() const noexcept { return received_; }
  // The announced size; nullopt for a raw upload, `-`, or before the header.
  [[nodiscard]] std::optional<std::uint64_t> expected_size() const noexcept { return expected_; }

 private:
  void detect(std::string_view& bytes, UploadStep& step);
  void consume_magic(std::string_view& bytes, UploadStep& step);
  std::string_view consume_header(std::string_view bytes, UploadStep& step);
  std::string_view consume_resume_line(std::string_view bytes, UploadStep& step);
  void start_body(UploadStep& step, std::optional<UploadHeader> header);
  std::string_view take_body(std::string_view bytes, UploadStep& step);
  void fail(UploadStep& step, UploadFailure failure, std::string reason);

  std::uint64_t max_size_;
  State state_ = State::detecting;
  bool any_bytes_ = false;
  std::string held_;         // the first bytes, while detecting; then the part that is body
  std::string header_line_;  // after the magic, up to the '\n'
  std::string resume_line_;  // the FROM line, up to the '\n'
  std::optional<std::uint64_t> expected_;
  std::uint64_t received_ = 0;
};

}  // namespace mux
