#include "chat/token_gate.hpp"

#include <utility>

#include <fmt/format.h>

#include "core/access/access_tokens.hpp"

namespace mux {

TokenGate::TokenGate(EventLoop& loop, const ChatAccess& access, const std::string& origin,
                     Hooks& hooks)
    : loop_(loop), access_(access), origin_(origin), hooks_(hooks) {
  if (access_.auth_timeout.count() > 0) {
    deadline_timer_ = loop_.add_timer(access_.auth_timeout, [this] {
      deadline_timer_ = 0;
      shed(fmt::format("not authenticated within {} ms", access_.auth_timeout.count()));
    });
  }
}

void TokenGate::shed(std::string reason) {
  if (joined_ || refused_) return;
  refused_ = true;
  loop_.cancel_timer(std::exchange(deadline_timer_, 0));
  hooks_.gate_hold_reading();
  hooks_.gate_finish(reason);
}

TokenGate::~TokenGate() {
  loop_.cancel_timer(refusal_timer_);
  loop_.cancel_timer(deadline_timer_);
}

void TokenGate::handshake_done() {
  handshake_done_ = true;
  join_if_through();
}

bool TokenGate::take_line(std::string_view text) {
  std::optional<std::string_view> token = chat::token_of_line(text);
  // After joining (a client configured with a token, or one repeating it): never a message.
  if (joined_) return token.has_value();
  if (refused_) return true;
  if (token && access_.tokens_required() && access_.tokens->accepts(*token)) {
    token_accepted_ = true;
    join_if_through();
    return true;
  }
  refuse(token ? "unauthorized: wrong token" : "unauthorized: no /token line first");
  return true;
}

void TokenGate::join_if_through() {
  if (joined_ || refused_ || !handshake_done_) return;
  if (access_.tokens_required() && !token_accepted_) return;
  joined_ = true;
  loop_.cancel_timer(std::exchange(deadline_timer_, 0));
  hooks_.gate_join();
}

void TokenGate::refuse(std::string reason) {
  refused_ = true;
  loop_.cancel_timer(std::exchange(deadline_timer_, 0));
  hooks_.gate_hold_reading();
  std::chrono::milliseconds delay{0};
  if (access_.throttle != nullptr)
    delay =
        access_.throttle->record_failure(throttle_address(origin_), FailureThrottle::Clock::now());
  hooks_.gate_log(fmt::format("{}: {}; answering in {} ms", origin_, reason, delay.count()));
  refusal_timer_ = loop_.add_timer(delay, [this, reason = std::move(reason)] {
    refusal_timer_ = 0;
    hooks_.gate_send(chat::kUnauthorized);
    hooks_.gate_finish(reason);
  });
}

}  // namespace mux
