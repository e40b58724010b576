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

// Read, hash and send 1 MiB at a time. On loopback this measured faster than sendfile(2) (median
// 2.1 vs 1.2 GB/s for 1 GiB from the page cache, iperf3 2.3 GB/s on the same machine): the
// receiver copies out of a few large kernel buffers instead of thousands of page-cache pages,
// and the hash reads the chunk while it is still in cache, so sendfile's saved copy is not worth
// the extra pass over the file the hash would need.
constexpr std::size_t kChunkSize = 1 << 20;
// Calls per wakeup before the loop gets a turn (progress redraws, an early ERR reply).
constexpr int kMaxSendsPerWakeup = 64;
constexpr std::size_t kMaxReplyLine = 4096;
constexpr std::chrono::milliseconds kRedrawInterval{100};
constexpr std::chrono::seconds kReplyTimeout{60};

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
      started_(EventLoop::Clock::now()),
      chunk_(kChunkSize) {}

UploadSender::Result UploadSender::run() {
  loop_.watch(socket_.get(), EPOLLIN | EPOLLOUT,
              [this](std::uint32_t events) { on_socket(events); });
  if (progress_.style() == ProgressDisplay::Style::terminal) {
    loop_.add_periodic(kRedrawInterval, [this] { progress_.redraw(elapsed_seconds()); });
  }
  loop_.on_signal(SIGINT, [this] { fail("interrupted"); });
  loop_.on_signal(SIGTERM, [this] { fail("interrupted"); });
  loop_.run();
  loop_.unwatch(socket_.get());
  if (failure_) {
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
  for (int calls = 0; calls < kMaxSendsPerWakeup && sent_ < source_.size; ++calls) {
    if (sent_ == read_ && !read_and_hash_next_chunk()) return;
    std::size_t unsent = static_cast<std::size_t>(read_ - sent_);
    ssize_t n =
        ::send(socket_.get(), chunk_.data() + (chunk_filled_ - unsent), unsent, MSG_NOSIGNAL);
    if (n > 0) {
      sent_ += static_cast<std::uint64_t>(n);
      progress_.update(sent_, elapsed_seconds());
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) on_send_error(errno);
    return;
  }
  if (sent_ == source_.size) finish_sending();
}

bool UploadSender::read_and_hash_next_chunk() {
  std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(source_.size - read_, chunk_.size()));
  ssize_t got;
  do {
    got = ::pread(source_.file.get(), chunk_.data(), want,
                  static_cast<off_t>(source_.offset + read_));
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    fail(got == 0 ? fmt::format("{}: the file got shorter while it was being sent", source_label_)
                  : fmt::format("{}: {}", source_label_, std::generic_category().message(errno)));
    return false;
  }
  // Hashed while the chunk is still in cache from the read; send() then copies it from there.
  hash_.update(chunk_.data(), static_cast<std::size_t>(got));
  chunk_filled_ = static_cast<std::size_t>(got);
  read_ += static_cast<std::uint64_t>(got);
  return true;
}

void UploadSender::finish_sending() {
  sending_ = false;
  final_hash_ = hash_.hex();
  ::shutdown(socket_.get(), SHUT_WR);
  loop_.modify(socket_.get(), EPOLLIN);
  loop_.add_timer(kReplyTimeout, [this] {
    fail(fmt::format("no reply from {} within {} s", server_, kReplyTimeout.count()));
  });
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
  } else if (sending_) {
    fail(fmt::format("{} replied OK after {} of {} bytes", server_, sent_, source_.size));
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

double UploadSender::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
