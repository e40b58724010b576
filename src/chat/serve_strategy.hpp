// ServeStrategy: how chat-server serves a client the listener admitted (--serve). SingleServe
// serves it in this process's loop (a LocalMember); ForkServe forks a child per client that owns
// its socket (framing, output queue, TLS) and joins the room here through a ChildLink over a
// socketpair (chat/fork_relay.hpp). The room, the members, the listener and the shutdown are
// ChatServer's, the same for both; a strategy only makes members and says whether it can take
// one more.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "chat/chat_access.hpp"
#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "chat/fork_relay.hpp"
#include "core/loop/listener.hpp"
#include "core/service/child_supervisor.hpp"

namespace mux {

class Logger;

// What a strategy makes members with. `keep` hands a new member to the server, which owns it
// until it asks to be released; the strategy starts it after.
struct ServeParts {
  SessionContext& context;
  ChatRoom& room;
  MemberOwner& owner;
  const ChatAccess& access;
  Logger& logger;
  std::function<void(std::unique_ptr<ChatMember>)> keep;
};

class ServeStrategy {
 public:
  ServeStrategy() = default;
  ServeStrategy(const ServeStrategy&) = delete;
  ServeStrategy& operator=(const ServeStrategy&) = delete;
  virtual ~ServeStrategy() = default;

  // Serves an admitted client (its socket options set); a client that cannot be served is told
  // the server is full and closed.
  virtual void serve(Admitted client) = 0;
  // Whether one more client can be served now (the listener waits otherwise).
  [[nodiscard]] virtual bool has_room() const = 0;
  // The server stops, its members gone: whatever still serves clients gets `grace` to end.
  virtual void finish(std::chrono::milliseconds grace) = 0;
};

class SingleServe final : public ServeStrategy {
 public:
  explicit SingleServe(ServeParts parts) : parts_(std::move(parts)) {}
  void serve(Admitted client) override;
  [[nodiscard]] bool has_room() const override { return true; }
  void finish(std::chrono::milliseconds /*grace*/) override {}

 private:
  ServeParts parts_;
};

class ForkServe final : public ServeStrategy {
 public:
  // At most `max_children` processes (reaped ones free their slot: `on_reaped`).
  ForkServe(ServeParts parts, std::size_t max_children, std::function<void()> on_reaped);
  void serve(Admitted client) override;
  [[nodiscard]] bool has_room() const override { return children_.has_room(); }
  void finish(std::chrono::milliseconds grace) override { children_.wait_all(grace); }

 private:
  // Admitted but cannot be served (no process, no socketpair): told the server is full, closed.
  void refuse(Admitted client, const std::string& why);

  ServeParts parts_;
  // Coalesces each batch's deliveries to the children; outlives the links (the server destroys
  // its members before its strategy).
  ForkFanOut fan_out_;
  // Children exit once their link closes; whatever is left at the end is killed.
  ChildSupervisor children_;
};

}  // namespace mux
