#include "core/listener.hpp"

#include "core/logger.hpp"

namespace mux {

Listener::Listener(EventLoop& loop, Fd listening_socket, Logger& logger, HasRoom has_room,
                   OnConnection on_connection)
    : loop_(loop),
      logger_(logger),
      acceptor_(std::move(listening_socket)),
      has_room_(std::move(has_room)),
      on_connection_(std::move(on_connection)) {}

Listener::~Listener() {
  set_watching(false);
}

void Listener::resume() {
  if (!closed_) set_watching(true);
}

void Listener::close() {
  set_watching(false);
  acceptor_.close();
  closed_ = true;
}

void Listener::set_watching(bool on) {
  if (on == watching_) return;
  watching_ = on;
  if (on) {
    loop_.watch(acceptor_.fd(), EPOLLIN, [this](std::uint32_t) { accept_pending(); });
  } else {
    loop_.unwatch(acceptor_.fd());
  }
}

void Listener::accept_pending() {
  while (has_room_()) {
    bool dropped = false;
    std::optional<Acceptor::Accepted> accepted = acceptor_.accept(dropped);
    if (dropped) logger_.info("refused a connection: out of file descriptors");
    if (!accepted) return;
    on_connection_(std::move(*accepted));
    if (closed_) return;  // the owner shut down while handling it
  }
  set_watching(false);
}

}  // namespace mux
