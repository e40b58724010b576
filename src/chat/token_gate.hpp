// TokenGate: one client's way through ChatAccess, the same in both serve modes (single: in
// LocalMember, fork: in the child's ChildRelay). The client is through once its TLS handshake is
// done and, with --token-file, its first line was "/token SECRET" with a good token; only then does
// it join the room. A wrong or missing token holds reading and, after the FailureThrottle's delay
// for the address, is answered "* unauthorized" and closed. A client not through within
// --auth-timeout (handshake and token together) is closed without a word. A "/token" line is never
// a message, before or after joining, so a token never reaches the room or its log.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "chat/chat_access.hpp"
#include "core/event_loop.hpp"

namespace mux {

class TokenGate {
 public:
  struct Hooks {
    std::function<void()> join;                           // through: join the room
    std::function<void()> hold_reading;                   // refused: read nothing more
    std::function<void(std::string_view text)> send;      // "* unauthorized"
    std::function<void(std::string_view reason)> finish;  // write what is queued, close
    std::function<void(const std::string& line)> log;     // null: the caller logs on leaving
  };

  // `origin` names the client in the log ("127.0.0.1:40000"); its address keys the throttle.
  TokenGate(EventLoop& loop, const ChatAccess& access, std::string origin, Hooks hooks);
  TokenGate(const TokenGate&) = delete;
  TokenGate& operator=(const TokenGate&) = delete;
  ~TokenGate();

  // The handshake is done (plain TCP: at once). Joins if nothing else is awaited.
  void handshake_done();
  // A line from the client. True when the gate took it (before joining, or a "/token" line);
  // false when it is for the room.
  bool take_line(std::string_view text);
  // Closes a client not through yet, without a word (its deadline, or shed to make room).
  void shed(std::string reason);
  // The server told the client to go (full, shutdown): it never joins.
  void closing() noexcept { refused_ = true; }

  [[nodiscard]] bool joined() const noexcept { return joined_; }

 private:
  void join_if_through();
  void refuse(std::string reason);

  EventLoop& loop_;
  const ChatAccess& access_;
  std::string origin_;
  Hooks hooks_;
  EventLoop::TimerId refusal_timer_ = 0;
  EventLoop::TimerId deadline_timer_ = 0;
  bool handshake_done_ = false;
  bool joined_ = false;
  bool refused_ = false;
  bool token_accepted_ = false;
};

}  // namespace mux
