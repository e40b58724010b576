// LocalMember: a room member served in the server's own loop (--serve single): the glue between
// one ClientSession and the ChatRoom. Created and owned by the chat server; holds the client's
// admission slot.
#pragma once

#include <chrono>
#include <string_view>

#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "core/admission.hpp"

namespace mux {

class LocalMember final : public ChatMember, private ClientSession::Listener {
 public:
  LocalMember(SessionContext& context, Fd socket, AdmissionTicket ticket, ChatRoom& room,
              MemberOwner& owner)
      : ticket_(std::move(ticket)),
        room_(room),
        owner_(owner),
        session_(context, std::move(socket), *this) {}

  void deliver(const Block& block) override { session_.send(block); }
  void close_after_output() override { session_.finish("closed by server"); }
  void pause_input(std::chrono::milliseconds pause) override { session_.pause_reading_for(pause); }

 private:
  void on_line(std::string_view text, bool cut) override { room_.receive_line(*this, text, cut); }
  void on_input_done() override { room_.end_of_input(); }
  void on_leave(std::string_view reason, bool too_slow) override {
    room_.leave(*this, reason, too_slow);
    session_.finish(reason);  // the room has answered all it read: write that, then close
  }
  void on_closed() override { owner_.release(*this); }

  AdmissionTicket ticket_;  // the client's admission slot, held until the member is destroyed
  ChatRoom& room_;
  MemberOwner& owner_;
  ClientSession session_;
};

}  // namespace mux
