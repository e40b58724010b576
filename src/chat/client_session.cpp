#include "chat/client_session.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "core/units.hpp"

namespace mux {

ClientSession::ClientSession(SessionContext& context, Fd socket, Listener& listener)
    : context_(context),
      listener_(listener),
      socket_(std::move(socket)),
      framer_(context.max_line),
      writer_(context.loop, socket_.get(), [this](int error) {
        leave(fmt::format("write failed: {}", std::strerror(error)), false);
        close();
      }) {
  context_.loop.watch(socket_.get(), EPOLLIN,
                      [this](std::uint32_t events) { handle_events(events); });
}

ClientSession::~ClientSession() {
  context_.loop.cancel_timer(timer_);
  context_.loop.unwatch(socket_.get());
}

void ClientSession::handle_events(std::uint32_t events) {
  if (events & EPOLLOUT) writer_.on_writable();
  if (state_ == State::closed) return;
  if ((events & (EPOLLHUP | EPOLLERR)) && state_ != State::open) return close();
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  if (state_ == State::open) {
    read_input();
  } else {
    discard_input();
  }
}

void ClientSession::read_input() {
  ReadBuffer& buffer = context_.read_buffer;
  ssize_t n = ::read(socket_.get(), buffer.data(), buffer.size());
  auto on_line = [this](std::string_view line, bool cut) { deliver_line(line, cut); };
  if (n > 0) {
    std::string_view bytes(buffer.data(), static_cast<std::size_t>(n));
    framer_.feed(bytes, on_line);
    listener_.on_input_done();
    // Input that stops mid-line (pending, or the dropped tail of an overlong line) ends after
    // the quiet time; a line split across writes a few ms apart keeps resetting the timer.
    if (state_ == State::open) rearm_quiet_timer(bytes.back() != '\n');
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n == 0) return on_peer_closed();
  leave(fmt::format("connection error: {}", std::strerror(errno)), false);
  close();
}

void ClientSession::on_peer_closed() {
  peer_closed_ = true;
  // "bye" without a newline, then close: still delivered.
  framer_.flush_partial([this](std::string_view line, bool cut) { deliver_line(line, cut); });
  listener_.on_input_done();
  if (state_ != State::open) return;  // the last line was /quit: already leaving
  // Answers to its last lines may still be on their way (in fork mode through the parent):
  // keep writing until the listener calls finish().
  state_ = State::half_open;
  context_.loop.cancel_timer(std::exchange(timer_, 0));
  stop_reading();
  leave("closed by client", false);
}

void ClientSession::stop_reading() {
  int fd = socket_.get();
  context_.loop.modify(fd, context_.loop.interest(fd) & ~static_cast<std::uint32_t>(EPOLLIN));
}

void ClientSession::discard_input() {
  ssize_t n = ::read(socket_.get(), context_.read_buffer.data(), context_.read_buffer.size());
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) close();
}

void ClientSession::deliver_line(std::string_view raw, bool cut) {
  if (state_ != State::open) return;  // lines after /quit are not read
  std::string& sanitized = context_.sanitized;
  sanitized.clear();
  chat::append_sanitized(sanitized, raw, cut);
  listener_.on_line(sanitized, cut);
}

void ClientSession::rearm_quiet_timer(bool mid_line) {
  context_.loop.cancel_timer(std::exchange(timer_, 0));
  if (!mid_line) return;
  timer_ = context_.loop.add_timer(SessionContext::kQuietTime, [this] {
    timer_ = 0;
    flush_quiet_line();
  });
}

void ClientSession::flush_quiet_line() {
  if (state_ != State::open) return;
  framer_.flush_partial([this](std::string_view line, bool cut) { deliver_line(line, cut); });
  listener_.on_input_done();
}

void ClientSession::send(const Block& block) {
  if (state_ == State::closed) return;
  writer_.send(block);
  if (writer_.queued() <= context_.max_queue) return;
  // Over the limit counts only what the kernel would not take: write now before judging.
  writer_.flush();
  if (state_ == State::closed || writer_.queued() <= context_.max_queue) return;
  leave(fmt::format("too slow: {} unsent", format_bytes(writer_.queued())), true);
  close();
}

void ClientSession::finish(std::string_view reason) {
  if (state_ != State::open && state_ != State::half_open) return;
  leave(std::string(reason), false);
  start_draining();
}

void ClientSession::leave(std::string reason, bool too_slow) {
  if (left_) return;
  left_ = true;
  // Deferred: this may run inside the room's walk over its members (a send found us too slow).
  context_.loop.defer(
      [this, reason = std::move(reason), too_slow] { listener_.on_leave(reason, too_slow); });
}

void ClientSession::start_draining() {
  state_ = State::draining;
  context_.loop.cancel_timer(timer_);
  timer_ = context_.loop.add_timer(SessionContext::kCloseTimeout, [this] {
    timer_ = 0;
    close();
  });
  stop_reading();
  writer_.when_drained([this] {
    if (state_ == State::draining) start_lingering();
  });
}

void ClientSession::start_lingering() {
  if (peer_closed_) return close();
  // Closing a socket with unread input makes the kernel send RST, which can destroy the last
  // lines in flight to the client. Half-close instead and read until the client closes too.
  state_ = State::lingering;
  context_.loop.cancel_timer(timer_);
  timer_ = context_.loop.add_timer(SessionContext::kLingerTime, [this] {
    timer_ = 0;
    close();
  });
  ::shutdown(socket_.get(), SHUT_WR);
  context_.loop.modify(socket_.get(), EPOLLIN);
}

void ClientSession::close() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  context_.loop.cancel_timer(std::exchange(timer_, 0));
  writer_.detach();
  context_.loop.unwatch(socket_.get());
  leave("closed", false);
  context_.loop.defer([this] { listener_.on_closed(); });
}

}  // namespace mux
