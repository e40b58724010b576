#include "core/loop/byte_stream.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <system_error>

namespace mux {

std::string IoResult::describe() const {
  if (!detail.empty()) return detail;
  if (status == Status::end_of_stream) return "closed by peer";
  return std::generic_category().message(error);
}

namespace {

bool retry_later(int error) {
  return error == EAGAIN || error == EWOULDBLOCK;
}

class PlainStream final : public ByteStream {
 public:
  explicit PlainStream(int fd) : fd_(fd) {}

  IoResult handshake() override { return IoResult::moved(0); }

  IoResult read(char* data, std::size_t size) override {
    return receive([&] { return ::read(fd_, data, size); });
  }

  IoResult writev(const iovec* chunks, int count) override {
    if (count > IOV_MAX) count = IOV_MAX;
    for (;;) {
      // sendmsg, not writev: MSG_NOSIGNAL makes a reset peer an EPIPE even where SIGPIPE is not
      // ignored (tests that link the core).
      msghdr message{};
      message.msg_iov = const_cast<iovec*>(chunks);
      message.msg_iovlen = static_cast<std::size_t>(count);
      ssize_t written = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
      if (written >= 0) return IoResult::moved(static_cast<std::size_t>(written));
      if (errno == EINTR) continue;
      if (errno == ENOTSOCK) return write_plain_fd(chunks, count);
      wants_ = EPOLLOUT;
      if (retry_later(errno)) return IoResult::blocked_on();
      return IoResult::failure(errno);
    }
  }

  IoResult shutdown_write() override {
    if (::shutdown(fd_, SHUT_WR) == 0 || errno == ENOTCONN) return IoResult::moved(0);
    return IoResult::failure(errno);
  }

  [[nodiscard]] std::uint32_t wants() const override { return wants_; }
  [[nodiscard]] int fd() const noexcept override { return fd_; }
  void renumber(int fd) noexcept override { fd_ = fd; }

 private:
  // One read: what it moved, the end of the stream, or why not (EINTR retried).
  template <typename Receive>
  IoResult receive(Receive call) {
    for (;;) {
      ssize_t got = call();
      if (got > 0) return IoResult::moved(static_cast<std::size_t>(got));
      if (got == 0) return IoResult::end();
      if (errno == EINTR) continue;
      wants_ = EPOLLIN;
      if (retry_later(errno)) return IoResult::blocked_on();
      return IoResult::failure(errno);
    }
  }

  // Pipes in tests and the chat client's stdout are not sockets.
  IoResult write_plain_fd(const iovec* chunks, int count) {
    for (;;) {
      ssize_t written = ::writev(fd_, chunks, count);
      if (written >= 0) return IoResult::moved(static_cast<std::size_t>(written));
      if (errno == EINTR) continue;
      wants_ = EPOLLOUT;
      if (retry_later(errno)) return IoResult::blocked_on();
      return IoResult::failure(errno);
    }
  }

  int fd_;
  std::uint32_t wants_ = EPOLLIN;
};

}  // namespace

std::unique_ptr<ByteStream> make_plain_stream(int fd) {
  return std::make_unique<PlainStream>(fd);
}

}  // namespace mux
