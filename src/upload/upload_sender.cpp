#include "upload/upload_sender.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "upload/progress_display.hpp"
#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

// Calls per wakeup before the loop gets a turn (progress redraws, an early ERR reply).
constexpr int kMaxSendsPerWakeup = 64;
constexpr std::size_t kMaxReplyLine = 4096;
constexpr std::chrono::milliseconds kRedrawInterval{100};
// How often a stalled send or a missing reply is looked for.
constexpr std::chrono::milliseconds kProgressCheckInterval{250};

// Text from the server ends up on a terminal: no control bytes.
std::string printable(std::string_view text) {
  std::string shown(text.substr(0, 300));
  std::replace_if(
      shown.begin(), shown.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }, '?');
  return shown;
}

}  // namespace

UploadSender::UploadSender(UploadSource source, std::string source_label, std::string header_line,
                           Fd socket, std::string server, ProgressDisplay& progress)
    : source_(std::move(source)),
      source_label_(std::move(source_label)),
      header_line_(std::move(header_line)),
      socket_(std::move(socket)),
      server_(std::move(server)),
      progress_(progress),
      started_(EventLoop::Clock::now()) {}

UploadSender::Result UploadSender::run() {
  loop_.watch(socket_.get(), EPOLLIN | EPOLLOUT,
              [this](std::uint32_t events) { on_socket(events); });
  if (progress_.style() == ProgressDisplay::Style::terminal) {
    loop_.add_periodic(kRedrawInterval, [this] { progress_.redraw(elapsed_seconds()); });
  }
  last_progress_ = EventLoop::Clock::now();
  if (stall_timeout_.count() > 0)
    loop_.add_periodic(kProgressCheckInterval, [this] { check_progress(); });
  loop_.on_signal(SIGINT, [this] { fail("interrupted"); });
  loop_.on_signal(SIGTERM, [this] { fail("interrupted"); });
  reader_.emplace(source_.file.get(), source_.offset, source_.size);
  loop_.watch(reader_->ready_fd(), EPOLLIN, [this](std::uint32_t) { on_chunk_ready(); });
  loop_.run();
  loop_.unwatch(reader_->ready_fd());
  loop_.unwatch(socket_.get());
  if (failure_) {
    if (sending_ && !source_.size) reset_connection();
    progress_.clear();
    throw std::runtime_error(*failure_);
  }
  return Result{sent_, final_hash_, elapsed_seconds()};
}

void UploadSender::on_socket(std::uint32_t events) {
  // Readable while still sending means the server answered early: usually an ERR refusal.
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) read_reply();
  if (sending_ && !loop_.stopping() && (events & EPOLLOUT) != 0) send_more();
}

bool UploadSender::send_header() {
  while (header_sent_ < header_line_.size()) {
    // MSG_MORE: the header rides in the same segment as the first bytes of the file.
    ssize_t n = ::send(socket_.get(), header_line_.data() + header_sent_,
                       header_line_.size() - header_sent_, MSG_NOSIGNAL | MSG_MORE);
    if (n >= 0) {
      header_sent_ += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) on_send_error(errno);
    return false;
  }
  return true;
}

void UploadSender::send_more() {
  if (!send_header()) return;
  for (int calls = 0; calls < kMaxSendsPerWakeup; ++calls) {
    std::optional<std::string_view> chunk = reader_->front();
    if (!chunk) {
      if (reader_->at_end()) {
        finish_sending();
      } else {
        wait_for_chunk();
      }
      return;
    }
    chunk->remove_prefix(chunk_sent_);
    ssize_t n = ::send(socket_.get(), chunk->data(), chunk->size(), MSG_NOSIGNAL);
    if (n > 0) {
      sent_ += static_cast<std::uint64_t>(n);
      chunk_sent_ += static_cast<std::size_t>(n);
      last_progress_ = EventLoop::Clock::now();
      if (static_cast<std::size_t>(n) == chunk->size()) {
        reader_->pop_front();
        chunk_sent_ = 0;
      }
      progress_.update(sent_, elapsed_seconds());
      // A known size ends with its last byte: the server may reply OK before the reader has
      // even said it is done.
      if (source_.size && sent_ == *source_.size) {
        finish_sending();
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) on_send_error(errno);
    return;
  }
}

void UploadSender::wait_for_chunk() {
  std::string why = reader_->failure();
  if (!why.empty()) {
    fail(fmt::format("{}: {}", source_label_, why));
    return;
  }
  // Nothing to send until the reader signals: stop asking for EPOLLOUT, or the loop would spin.
  waiting_for_chunk_ = true;
  loop_.modify(socket_.get(), EPOLLIN);
}

void UploadSender::on_chunk_ready() {
  reader_->clear_ready();
  if (!waiting_for_chunk_ || !sending_ || loop_.stopping()) return;
  waiting_for_chunk_ = false;
  loop_.modify(socket_.get(), EPOLLIN | EPOLLOUT);
  send_more();
}

void UploadSender::finish_sending() {
  sending_ = false;
  final_hash_ = reader_->hash_hex();
  ::shutdown(socket_.get(), SHUT_WR);
  loop_.modify(socket_.get(), EPOLLIN);
  last_progress_ = EventLoop::Clock::now();  // the reply gets the whole stall timeout
}

void UploadSender::check_progress() {
  if (waiting_for_chunk_) {  // our own disk is slow, not the server
    last_progress_ = EventLoop::Clock::now();
    return;
  }
  if (EventLoop::Clock::now() - last_progress_ < stall_timeout_) return;
  if (sending_) {
    std::string sent = source_.size ? fmt::format("{} of {} bytes sent", sent_, *source_.size)
                                    : fmt::format("{} bytes sent", sent_);
    fail(fmt::format("{} took no data for {} s ({}); giving up", server_, stall_timeout_.count(),
                     sent));
  } else {
    fail(fmt::format("no reply from {} within {} s", server_, stall_timeout_.count()));
  }
}

void UploadSender::on_send_error(int error) {
  // A server that refuses an upload replies ERR and closes: the reason is already here.
  read_reply();
  if (!loop_.stopping()) {
    fail(fmt::format("send to {}: {}", server_, std::generic_category().message(error)));
  }
}

void UploadSender::read_reply() {
  char buffer[kMaxReplyLine];
  while (!loop_.stopping()) {
    ssize_t n = ::recv(socket_.get(), buffer, sizeof buffer, 0);
    if (n > 0) {
      reply_text_.append(buffer, static_cast<std::size_t>(n));
      std::size_t newline = reply_text_.find('\n');
      if (newline != std::string::npos) {
        check_reply(reply_text_.substr(0, newline));
      } else if (reply_text_.size() > kMaxReplyLine) {
        fail(fmt::format("{} sent something that is not a MUXUP/1 reply", server_));
      }
      continue;
    }
    if (n == 0) {
      fail(fmt::format("{} closed the connection without a reply", server_));
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    fail(fmt::format("connection to {}: {}", server_, std::generic_category().message(errno)));
  }
}

void UploadSender::check_reply(const std::string& line) {
  std::optional<UploadReply> reply = parse_reply_line(line);
  if (!reply) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 reply: \"{}\"", server_,
                     printable(line)));
  } else if (!reply->ok) {
    fail(fmt::format("{} refused the upload: {}", server_, printable(reply->reason)));
  } else if (sending_ && source_.size) {
    fail(fmt::format("{} replied OK after {} of {} bytes", server_, sent_, *source_.size));
  } else if (sending_) {
    fail(fmt::format("{} replied OK after {} bytes, before the end of {}", server_, sent_,
                     source_label_));
  } else if (reply->bytes != sent_ || reply->hash != final_hash_) {
    fail(
        fmt::format("verification failed: {} received {} bytes with XXH3-128 {}, sent {} bytes "
                    "with XXH3-128 {}",
                    server_, reply->bytes, reply->hash, sent_, final_hash_));
  } else {
    loop_.stop();  // confirmed
  }
}

void UploadSender::fail(std::string message) {
  if (loop_.stopping()) return;  // the first failure is the one worth telling
  failure_ = std::move(message);
  loop_.stop();
}

void UploadSender::reset_connection() {
  // The server ends a stream of unknown length at the half-close and saves what it got: a stream
  // cut short by an error or a signal must end with a reset instead, so it is not taken for a
  // complete one. (Only a sender killed outright still ends with an orderly close; the hash
  // check is what catches that: no OK is ever accepted for it.)
  linger abort{1, 0};
  (void)::setsockopt(socket_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
  socket_.reset();
}

double UploadSender::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
