// TokenGate: one client's way through ChatAccess, the same in both serve modes (single: in
// LocalMember, fork: in the child's ChildRelay). The client is through once its TLS handshake is
// done and, with --token-file, its first line was "/token SECRET" with a good token; only then does
// it join the room. A wrong or missing token holds reading and, after the FailureThrottle's delay
// for the address, is answered "* unauthorized" and closed. A client not through within
// --auth-timeout (handshake and token together) is closed without a word. A "/token" line is never
// a message, before or after joining, so a token never reaches the room or its log.
#pragma once

#include <string>
#include <string_view>

#include "chat/chat_access.hpp"
#include "core/loop/event_loop.hpp"

namespace mux {

class TokenGate {
 public:
  // What the gate asks of its client. An interface, not five std::functions: the gate lives in
  // every member of a big room, and the functions were 160 of its bytes (issue 25).
  class Hooks {
   public:
    virtual void gate_join() = 0;                           // through: join the room
    virtual void gate_hold_reading() = 0;                   // refused: read nothing more
    virtual void gate_send(std::string_view text) = 0;      // "* unauthorized"
    virtual void gate_finish(std::string_view reason) = 0;  // write what is queued, close
    virtual void gate_log(const std::string& /*line*/) {}   // default: the caller logs on leaving

   protected:
    ~Hooks() = default;
  };

  // `origin` names the client in the log ("127.0.0.1:40000"); its address keys the throttle. It
  // is the caller's string, which outlives the gate (a copy per member cost 32 bytes).
  TokenGate(EventLoop& loop, const ChatAccess& access, const std::string& origin, Hooks& hooks);
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
  const std::string& origin_;
  Hooks& hooks_;
  EventLoop::TimerId refusal_timer_ = 0;
  EventLoop::TimerId deadline_timer_ = 0;
  bool handshake_done_ = false;
  bool joined_ = false;
  bool refused_ = false;
  bool token_accepted_ = false;
};

}  // namespace mux
