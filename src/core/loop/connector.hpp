// Connector: one outbound TCP connection being set up without blocking the loop — connect()
// returns EINPROGRESS, the socket turns writable when the attempt ends, SO_ERROR says how. Each
// address the name resolves to is tried in turn, all within one deadline. The caller (the Redis
// link, a client) wraps the connected socket in a Connection with the stream it wants (plain, or
// TLS with the server's name). Owned by its caller; destroying it cancels the attempt.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"

namespace mux {

class Connector {
 public:
  // Called once, never from inside the constructor: a connected non-blocking CLOEXEC socket, or
  // an invalid Fd and a one-line reason ("connect to 127.0.0.1:6379: Connection refused").
  using Done = std::function<void(Fd socket, std::string error)>;

  Connector(EventLoop& loop, const std::string& host, std::uint16_t port,
            std::chrono::milliseconds timeout, Done done);
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;
  ~Connector();

  [[nodiscard]] bool pending() const noexcept { return !finished_; }

 private:
  void try_next();
  void on_writable();
  void fail_attempt(int error);
  void finish(Fd socket, std::string error);
  void finish_later(Fd socket, std::string error);

  EventLoop& loop_;
  std::string endpoint_;
  std::vector<SocketAddress> addresses_;
  std::size_t next_ = 0;
  Fd socket_;
  Done done_;
  EventLoop::TimerId timer_ = 0;
  int last_error_ = 0;
  bool finished_ = false;
  std::shared_ptr<Connector*> self_;
};

// For clients that have nothing else to do until they are connected (chat-client, upload-client):
// runs a Connector in a loop of its own. Returns the connected non-blocking socket, or throws
// std::runtime_error naming the address ("connect to 127.0.0.1:5000: timed out after 10 s").
Fd connect_within(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);

}  // namespace mux
