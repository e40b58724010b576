// Listener: a listening socket watched by an EventLoop. It hands each new connection to its owner
// while the owner has room, and stops watching the socket when the owner is full, so newcomers
// wait in the kernel's backlog instead of being refused; the owner calls resume() when a client
// leaves. Used by servers whose limit means "wait" (upload-server, both serve modes).
#pragma once

#include <functional>

#include "core/event_loop.hpp"
#include "core/fd.hpp"
#include "core/net.hpp"

namespace mux {

class Logger;

class Listener {
 public:
  using HasRoom = std::function<bool()>;
  using OnConnection = std::function<void(Acceptor::Accepted)>;

  Listener(EventLoop& loop, Fd listening_socket, Logger& logger, HasRoom has_room,
           OnConnection on_connection);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Starts (or restarts, after the owner was full) accepting.
  void resume();
  // Stops accepting for good and closes the listening socket (shutdown).
  void close();

  [[nodiscard]] int fd() const noexcept { return acceptor_.fd(); }

 private:
  void accept_pending();
  void set_watching(bool on);

  EventLoop& loop_;
  Logger& logger_;
  Acceptor acceptor_;
  HasRoom has_room_;
  OnConnection on_connection_;
  bool watching_ = false;
  bool closed_ = false;
};

}  // namespace mux
