#include "core/loop/connector.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace mux {

Connector::Connector(EventLoop& loop, const std::string& host, std::uint16_t port,
                     std::chrono::milliseconds timeout, Done done)
    : loop_(loop),
      endpoint_(format_endpoint(host, port)),
      done_(std::move(done)),
      self_(std::make_shared<Connector*>(this)) {
  try {
    addresses_ = resolve_tcp(host, port);
  } catch (const std::exception& error) {
    finish_later(Fd(), error.what());
    return;
  }
  timer_ = loop_.add_timer(timeout, [this, timeout] {
    timer_ = 0;
    // An unanswered SYN says nothing more than this: no refusal, no route error, just silence.
    std::string waited = timeout.count() % 1000 == 0 ? fmt::format("{} s", timeout.count() / 1000)
                                                     : fmt::format("{} ms", timeout.count());
    finish(Fd(), fmt::format("connect to {}: timed out after {}", endpoint_, waited));
  });
  try_next();
}

Connector::~Connector() {
  *self_ = nullptr;
  loop_.cancel_timer(timer_);
  if (socket_) loop_.unwatch(socket_.get());
}

void Connector::try_next() {
  while (next_ < addresses_.size()) {
    const SocketAddress& address = addresses_[next_++];
    Fd fd(::socket(address.get()->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      last_error_ = errno;
      continue;
    }
    int rc;
    do {
      rc = ::connect(fd.get(), address.get(), address.length);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) return finish_later(std::move(fd), {});
    if (errno != EINPROGRESS) {
      last_error_ = errno;
      continue;
    }
    socket_ = std::move(fd);
    loop_.watch(socket_.get(), EPOLLOUT, [this](std::uint32_t) { on_writable(); });
    return;
  }
  if (last_error_ == 0) last_error_ = EADDRNOTAVAIL;
  finish_later(Fd(), fmt::format("connect to {}: {}", endpoint_,
                                 std::generic_category().message(last_error_)));
}

void Connector::on_writable() {
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
  loop_.unwatch(socket_.get());
  if (error != 0) {
    socket_.reset();
    last_error_ = error;
    return try_next();
  }
  finish(std::move(socket_), {});
}

void Connector::finish(Fd socket, std::string error) {
  if (finished_) return;
  finished_ = true;
  loop_.cancel_timer(std::exchange(timer_, 0));
  if (socket_) {
    loop_.unwatch(socket_.get());
    socket_.reset();
  }
  Done done = std::move(done_);
  done(std::move(socket), std::move(error));
}

// Outcomes known at once still reach the caller from the loop, never from inside its own call.
void Connector::finish_later(Fd socket, std::string error) {
  auto shared_socket = std::make_shared<Fd>(std::move(socket));
  loop_.defer([token = self_, shared_socket, error = std::move(error)]() mutable {
    if (Connector* connector = *token)
      connector->finish(std::move(*shared_socket), std::move(error));
  });
}

Fd connect_within(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  EventLoop loop;
  Fd connected;
  std::string failure;
  Connector connector(loop, host, port, timeout, [&](Fd socket, std::string error) {
    connected = std::move(socket);
    failure = std::move(error);
    loop.stop();
  });
  loop.run();
  if (!connected) throw std::runtime_error(failure);
  return connected;
}

}  // namespace mux
