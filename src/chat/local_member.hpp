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
#include "chat/token_gate.hpp"
#include "core/loop/admission.hpp"

namespace mux {

class LocalMember final : public ChatMember,
                          private ClientSession::Listener,
                          private TokenGate::Hooks {
 public:
  // `origin` ("127.0.0.1:40000") names the client in the room's log and keys the throttle.
  LocalMember(SessionContext& context, Fd socket, AdmissionTicket ticket, ChatRoom& room,
              MemberOwner& owner, const ChatAccess& access, std::string origin)
      : ticket_(std::move(ticket)),
        room_(room),
        owner_(owner),
        access_(access),
        origin_(std::move(origin)),
        session_(context, std::move(socket), *this),
        gate_(context.loop, access, origin_, *this) {
    ticket_.on_shed([this] { gate_.shed("shed for a newcomer: not authenticated yet"); });
  }

  // Joins now if nothing is left to wait for (plain TCP, no token); called once the server
  // keeps the member.
  void start() {
    if (session_.ready()) gate_.handshake_done();
  }

  void deliver(const Block& block) override { session_.send(block); }
  void close_after_output() override {
    gate_.closing();  // a member told to go (or refused as the server is full) never joins
    session_.finish("closed by server");
  }
  void pause_input(std::chrono::milliseconds pause) override { session_.pause_reading_for(pause); }

 private:
  // TokenGate::Hooks
  void gate_join() override {
    ticket_.authenticated();
    room_.join(*this, origin_);
  }
  void gate_hold_reading() override { session_.hold_reading(); }
  void gate_send(std::string_view text) override { session_.send(make_block(std::string(text))); }
  void gate_finish(std::string_view reason) override { session_.finish(reason); }
  void gate_log(const std::string& line) override {
    if (access_.logger != nullptr) access_.logger->info("{}", line);
  }

  void on_ready() override { gate_.handshake_done(); }
  void on_line(std::string_view text, bool cut) override {
    if (!gate_.take_line(text)) room_.receive_line(*this, text, cut);
  }
  void on_input_done() override {
    if (gate_.joined()) room_.end_of_input();
  }
  void on_leave(std::string_view reason, bool too_slow) override {
    if (gate_.joined()) {
      // Lines still held by the room (it is joining, or claiming a nick) are handled first; the
      // room then calls close_after_output().
      if (!room_.leave(*this, reason, too_slow)) return;
    } else if (access_.logger != nullptr) {
      access_.logger->info("{} left before joining ({})", origin_, reason);
    }
    session_.finish(reason);  // the room has answered all it read: write that, then close
  }
  void on_closed() override {
    if (gate_.joined()) room_.gone(*this);
    owner_.release(*this);
  }

  AdmissionTicket ticket_;  // the client's admission slot, held until the member is destroyed
  ChatRoom& room_;
  MemberOwner& owner_;
  const ChatAccess& access_;
  std::string origin_;
  ClientSession session_;
  TokenGate gate_;  // after the session its hooks use
};

}  // namespace mux
