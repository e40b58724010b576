// LocalMember: a room member served in the server's own loop (--serve single): the glue between
// one ClientSession and the ChatRoom. Created and owned by the chat server; holds the client's
// admission slot. It joins the room only once the client is through ChatAccess: the TLS
// handshake done and, with --token-file, a good "/token SECRET" first line.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "chat/chat_access.hpp"
#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "core/admission.hpp"

namespace mux {

class LocalMember final : public ChatMember, private ClientSession::Listener {
 public:
  // `origin` ("127.0.0.1:40000") names the client in the room's log and keys the throttle.
  LocalMember(SessionContext& context, Fd socket, AdmissionTicket ticket, ChatRoom& room,
              MemberOwner& owner, const ChatAccess& access, std::string origin)
      : context_(context),
        ticket_(std::move(ticket)),
        room_(room),
        owner_(owner),
        access_(access),
        origin_(std::move(origin)),
        session_(context, std::move(socket), *this) {}
  ~LocalMember() override { context_.loop.cancel_timer(refusal_timer_); }

  // Joins now if nothing is left to wait for (plain TCP, no token); called once the server
  // keeps the member.
  void start() { join_if_through(); }

  void deliver(const Block& block) override { session_.send(block); }
  void close_after_output() override {
    refused_ = true;  // a member told to go (or refused as the server is full) never joins
    session_.finish("closed by server");
  }
  void pause_input(std::chrono::milliseconds pause) override { session_.pause_reading_for(pause); }

 private:
  void on_ready() override { join_if_through(); }
  void on_line(std::string_view text, bool cut) override {
    bool first = !seen_line_;
    seen_line_ = true;
    if (joined_) {
      // A client with a token, talking to a server that needs none: its token is not a message.
      if (first && chat::token_of_line(text)) return;
      return room_.receive_line(*this, text, cut);
    }
    if (refused_) return;
    std::optional<std::string_view> token = chat::token_of_line(text);
    if (token && access_.tokens->accepts(*token)) {
      token_accepted_ = true;
      return join_if_through();
    }
    refuse(token ? "unauthorized: wrong token" : "unauthorized: no /token line first");
  }
  void on_input_done() override {
    if (joined_) room_.end_of_input();
  }
  void on_leave(std::string_view reason, bool too_slow) override {
    if (joined_) {
      room_.leave(*this, reason, too_slow);
    } else if (access_.logger != nullptr) {
      access_.logger->info("{} left before joining ({})", origin_, reason);
    }
    session_.finish(reason);  // the room has answered all it read: write that, then close
  }
  void on_closed() override { owner_.release(*this); }

  void join_if_through() {
    if (joined_ || refused_ || !session_.ready()) return;
    if (access_.tokens_required() && !token_accepted_) return;
    joined_ = true;
    room_.join(*this, origin_);
  }

  // A wrong or missing token: nothing more is read; after the address's delay the client is
  // told and closed (the delay grows with each failure from that address).
  void refuse(std::string reason) {
    refused_ = true;
    session_.hold_reading();
    auto delay = access_.throttle->record_failure(address_without_port(origin_),
                                                  FailureThrottle::Clock::now());
    if (access_.logger != nullptr)
      access_.logger->info("{}: {}; answering in {} ms", origin_, reason, delay.count());
    refusal_timer_ = context_.loop.add_timer(delay, [this, reason = std::move(reason)] {
      refusal_timer_ = 0;
      session_.send(make_block(std::string(chat::kUnauthorized)));
      session_.finish(reason);
    });
  }

  SessionContext& context_;
  AdmissionTicket ticket_;  // the client's admission slot, held until the member is destroyed
  ChatRoom& room_;
  MemberOwner& owner_;
  const ChatAccess& access_;
  std::string origin_;
  ClientSession session_;
  EventLoop::TimerId refusal_timer_ = 0;
  bool joined_ = false;
  bool refused_ = false;
  bool token_accepted_ = false;
  bool seen_line_ = false;
};

}  // namespace mux
