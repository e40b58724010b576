#include "upload/upload_session.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/logger.hpp"
#include "core/units.hpp"

namespace mux {
namespace {

// Bounds the bytes one connection takes per wakeup (4 MiB), so a fast client cannot starve the
// others sharing the loop; epoll is level-triggered and calls it again while bytes remain.
constexpr int kMaxReadsPerWakeup = 4;
// After OK, the client is expected to half-close; one that never does is closed after this.
constexpr std::chrono::seconds kLingerAfterReply{10};
constexpr std::string_view kIncompletePrefix = "incomplete: ";
constexpr std::uint64_t kReserveStep = 64 << 20;

}  // namespace

UploadSession::UploadSession(UploadContext& context, Fd socket, std::uint64_t client_number,
                             std::string peer, FinishedHandler on_finished)
    : context_(context),
      socket_(std::move(socket)),
      client_number_(client_number),
      peer_(std::move(peer)),
      on_finished_(std::move(on_finished)),
      started_(EventLoop::Clock::now()) {
  context_.loop.watch(socket_.get(), EPOLLIN, [this](std::uint32_t events) { on_events(events); });
}

UploadSession::~UploadSession() {
  context_.loop.cancel_timer(linger_timer_);
  if (socket_) context_.loop.unwatch(socket_.get());
}

bool UploadSession::in_flight() const noexcept {
  switch (phase_) {
    case Phase::detecting:
      return !header_line_.empty();  // a connection that sent nothing is not an upload yet
    case Phase::header:
    case Phase::body:
      return true;
    default:
      return false;
  }
}

void UploadSession::abort(std::string_view reason) {
  if (phase_ == Phase::finished) return;
  if (in_flight()) {
    fail(std::string(reason));
  } else {
    finish();
  }
}

void UploadSession::on_events(std::uint32_t /*events*/) {
  // Errors and hang-ups show up as a failing or empty read, so the events need no decoding.
  if (phase_ == Phase::replied) {
    drain_after_reply();
  } else {
    read_upload();
  }
}

void UploadSession::read_upload() {
  std::span<char> buffer = context_.read_buffer;
  for (int reads = 0; reads < kMaxReadsPerWakeup && receiving(); ++reads) {
    ssize_t got = ::read(socket_.get(), buffer.data(), buffer.size());
    if (got > 0) {
      consume(std::string_view(buffer.data(), static_cast<std::size_t>(got)));
      // A short read emptied the socket; asking again would only return EAGAIN.
      if (static_cast<std::size_t>(got) < buffer.size()) return;
      continue;
    }
    if (got == 0) {
      peer_closed_ = true;
      on_end_of_stream();
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    on_connection_lost(errno);
    return;
  }
}

void UploadSession::on_connection_lost(int error) {
  peer_closed_ = true;
  if (!in_flight()) {  // reset before sending a byte: not an upload either
    context_.logger.detail("{} closed without sending anything", client_label());
    finish();
    return;
  }
  fail(fmt::format("connection lost: {}", std::generic_category().message(error)));
}

bool UploadSession::receiving() const noexcept {
  return phase_ == Phase::detecting || phase_ == Phase::header || phase_ == Phase::body;
}

void UploadSession::drain_after_reply() {
  std::span<char> buffer = context_.read_buffer;
  for (int reads = 0; reads < kMaxReadsPerWakeup; ++reads) {
    ssize_t got = ::read(socket_.get(), buffer.data(), buffer.size());
    if (got > 0) continue;  // bytes past the announced size are not part of the upload
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    finish();
    return;
  }
}

void UploadSession::consume(std::string_view bytes) {
  if (phase_ == Phase::detecting) bytes = consume_detecting(bytes);
  if (phase_ == Phase::header) bytes = consume_header(bytes);
  if (phase_ == Phase::body) consume_body(bytes);
}

std::string_view UploadSession::consume_detecting(std::string_view bytes) {
  std::size_t have = header_line_.size();
  std::size_t need = std::min(kUploadMagic.size() - have, bytes.size());
  if (bytes.substr(0, need) != kUploadMagic.substr(have, need)) {
    start_raw();
    std::string prefix = std::exchange(header_line_, {});
    if (phase_ == Phase::body) consume_body(prefix);
    return bytes;
  }
  header_line_.append(bytes.substr(0, need));
  if (header_line_.size() == kUploadMagic.size()) phase_ = Phase::header;
  return bytes.substr(need);
}

std::string_view UploadSession::consume_header(std::string_view bytes) {
  std::size_t newline = bytes.find('\n');
  std::size_t line_part = newline == std::string_view::npos ? bytes.size() : newline;
  // The limit counts the '\n': a line without it may be at most kMaxHeaderLine - 1 bytes.
  if (header_line_.size() + line_part >= kMaxHeaderLine) {
    fail(fmt::format("bad header: line longer than {} bytes", kMaxHeaderLine));
    return {};
  }
  header_line_.append(bytes.substr(0, line_part));
  if (newline == std::string_view::npos) return {};
  HeaderParse parsed = parse_header_line(header_line_);
  if (!parsed.header) {
    fail(fmt::format("bad header: {}", parsed.error));
    return {};
  }
  start_with_header(*parsed.header);
  return bytes.substr(newline + 1);
}

void UploadSession::consume_body(std::string_view bytes) {
  if (expected_size_) {
    // Bytes after the announced size are not part of the upload; they are ignored.
    std::uint64_t remaining = *expected_size_ - received_;
    if (bytes.size() > remaining) bytes = bytes.substr(0, static_cast<std::size_t>(remaining));
    store(bytes);
    if (phase_ == Phase::body && received_ == *expected_size_) complete();
    return;
  }
  if (context_.max_size != 0 && bytes.size() > context_.max_size - received_) {
    received_ += bytes.size();
    fail(fmt::format("too large: more than the limit of {} bytes", context_.max_size));
    return;
  }
  store(bytes);
}

void UploadSession::on_end_of_stream() {
  switch (phase_) {
    case Phase::detecting:
      if (header_line_.empty()) {
        context_.logger.detail("{} closed without sending anything", client_label());
        finish();
        return;
      }
      start_raw();  // fewer bytes than the magic, all matching it: a tiny raw upload
      if (phase_ == Phase::body) {
        std::string prefix = std::exchange(header_line_, {});
        consume_body(prefix);
      }
      if (phase_ == Phase::body) complete();
      return;
    case Phase::header:
      fail("bad header: the connection ended inside the header line");
      return;
    case Phase::body:
      if (expected_size_) {
        fail(fmt::format("incomplete: only {} of {} bytes arrived", received_, *expected_size_));
      } else {
        complete();
      }
      return;
    default:
      return;
  }
}

void UploadSession::start_raw() {
  name_ = raw_upload_name(client_number_);
  phase_ = Phase::body;
  context_.logger.detail("{} raw upload (no MUXUP/1 header)", client_label());
  open_storage();
}

void UploadSession::start_with_header(const UploadHeader& header) {
  expected_size_ = header.size;
  name_ = sanitize_file_name(header.name, raw_upload_name(client_number_));
  context_.logger.detail("{} header: {} bytes, name \"{}\"", client_label(), header.size, name_);
  if (context_.max_size != 0 && header.size > context_.max_size) {
    fail(fmt::format("too large: {} bytes, the limit is {}", header.size, context_.max_size));
    return;
  }
  phase_ = Phase::body;
  if (!open_storage()) return;
  if (header.size == 0) complete();
}

bool UploadSession::open_storage() {
  if (context_.output_dir == nullptr) return true;
  try {
    file_.emplace(context_.output_dir->create_partial(client_number_));
    return true;
  } catch (const std::system_error& error) {
    fail(fmt::format("disk error: {}", error.code().message()));
    return false;
  }
}

void UploadSession::store(std::string_view bytes) {
  std::uint64_t offset = received_;
  received_ += bytes.size();
  hash_.update(bytes.data(), bytes.size());
  if (!file_) return;
  int error = reserve_disk_space(offset + bytes.size());
  if (error == 0) error = file_->append(bytes.data(), bytes.size());
  if (error != 0) fail(fmt::format("disk error: {}", std::generic_category().message(error)));
}

int UploadSession::reserve_disk_space(std::uint64_t needed) {
  // Only an announced size is reserved, and only a step ahead of what arrived, so a client
  // cannot claim the disk with a header alone. Allocating in big steps instead of block by
  // block as each write lands measured 440 instead of 755 ms of server CPU per GiB on ext4.
  if (!expected_size_ || needed <= reserved_) return 0;
  reserved_ = std::min(*expected_size_, needed + kReserveStep);
  return file_->reserve(reserved_);
}

void UploadSession::complete() {
  std::string saved_as;
  if (file_) {
    try {
      saved_as = file_->commit(name_);
    } catch (const std::system_error& error) {
      fail(fmt::format("disk error: {}", error.code().message()));
      return;
    }
    file_.reset();
  }
  double seconds = elapsed_seconds();
  context_.logger.info("Received {} bytes from {} in {:.3f} s ({})", received_, client_label(),
                       seconds,
                       format_rate(seconds > 0 ? static_cast<double>(received_) / seconds : 0));
  if (!saved_as.empty()) {
    context_.logger.info("Saved [Client {}] upload as {}", client_number_,
                         context_.output_dir->path_of(saved_as));
  }
  send_reply(format_ok_reply(received_, hash_.hex()));
  phase_ = Phase::replied;
  if (peer_closed_) {
    finish();
    return;
  }
  linger_timer_ = context_.loop.add_timer(kLingerAfterReply, [this] {
    linger_timer_ = 0;
    finish();
  });
}

void UploadSession::fail(const std::string& reason) {
  if (phase_ == Phase::finished) return;
  // The log says "incomplete" for every failure; a reason that starts with it need not repeat it.
  std::string_view why = reason;
  if (why.starts_with(kIncompletePrefix)) why.remove_prefix(kIncompletePrefix.size());
  file_.reset();  // removes the temporary file, before the log says the upload is over
  context_.logger.info("Received {} bytes from {} in {:.3f} s: incomplete ({})", received_,
                       client_label(), elapsed_seconds(), why);
  send_reply(format_err_reply(reason));
  finish();
}

void UploadSession::send_reply(const std::string& line) {
  // The reply is the only thing the server ever writes on this socket, so the send buffer is
  // empty and a line this short always fits; a peer that is gone just makes this fail.
  (void)::send(socket_.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void UploadSession::finish() {
  if (phase_ == Phase::finished) return;
  phase_ = Phase::finished;
  context_.loop.cancel_timer(std::exchange(linger_timer_, 0));
  context_.loop.unwatch(socket_.get());
  socket_.reset();
  file_.reset();
  on_finished_(*this);  // may hand this session to loop.retire(): nothing may follow
}

std::string UploadSession::client_label() const {
  return fmt::format("[Client {}] {}", client_number_, peer_);
}

double UploadSession::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
