// CurrentLink: the Connection's owner for one of a client's connections, when the client replaces
// its connection (a reconnect). A replaced connection's callbacks can still come (its close is
// deferred to after the batch, when the new one exists already); they are recognised by the
// connection's number and dropped, so the client only ever hears from its current connection.
#pragma once

#include <string_view>

#include "core/loop/connection.hpp"

namespace mux::chat {

// `Client` has link_number() (its current connection's number) and the link_... handlers.
template <typename Client>
class CurrentLink final : public Connection::Owner {
 public:
  CurrentLink(Client& client, unsigned number) : client_(client), number_(number) {}
  void on_data(std::string_view bytes) override {
    if (current()) client_.link_data(bytes);
  }
  void on_end_of_input() override {
    if (current()) client_.link_end_of_input();
  }
  void on_closed(std::string_view reason) override {
    if (current()) client_.link_closed(reason);
  }
  void on_ready() override {
    if (current()) client_.link_ready();
  }
  void on_writable() override {
    if (current()) client_.link_writable();
  }

 private:
  [[nodiscard]] bool current() const { return client_.link_number() == number_; }
  Client& client_;
  unsigned number_;
};

}  // namespace mux::chat
