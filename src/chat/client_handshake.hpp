// ClientHandshake: chat-client's side of the conversation that opens each connection (issue 23).
// It tells a chat server from other ports by the first line, asks a mux server for what recovery
// needs (its nick, /cap acks with the writer key, /cap ids, and after a reconnect /reclaim and
// /since), reads the answers, and says when typed lines may go out. It also keeps the room's
// epoch and the last message id seen, so that a replayed line is shown once, and the SendLedger
// of the lines sent. The connection, stdin, the screen and reconnecting are ChatClient's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "chat/room_roster.hpp"
#include "chat/send_ledger.hpp"
#include "core/loop/event_loop.hpp"

namespace mux::chat {

class ClientHandshake {
 public:
  // What it needs of the client.
  class Events {
   public:
    virtual void send(std::string_view text) = 0;  // to the server, on the current connection
    virtual void handshake_done() = 0;             // typed lines may go out now
    virtual void not_a_chat_server(std::string why) = 0;  // the run fails: nothing was sent
    virtual void resend_unconfirmed() = 0;  // the server said what it has: send the rest again
    virtual void notice(const std::string& text) = 0;

   protected:
    ~Events() = default;
  };

  ClientHandshake(EventLoop& loop, Events& events, RoomRoster& roster, std::string nick,
                  std::string server, bool quiet, std::size_t max_line);

  // A connection is up (after the token went out). After a reconnect everything is asked at once.
  void connected();
  // The connection is gone: nothing more is expected of it.
  void dropped();

  // A line from the server, before the screen: false when it is for the client, not to be shown;
  // a line with an id comes back without it ("[NAME]: TEXT").
  bool filter(std::string_view& line);

  // Lines may go out (the answers are in, or it was not a mux server).
  [[nodiscard]] bool ready() const noexcept { return phase_ == Phase::ready; }
  // The server greeted us at least once: a dropped connection is worth retrying.
  [[nodiscard]] bool ever_ready() const noexcept { return ever_ready_; }
  // It greeted with mux's welcome: it knows /cap, /since, /reclaim.
  [[nodiscard]] bool mux_server() const noexcept { return mux_server_; }
  // The server's --max-line, once it said it.
  [[nodiscard]] std::size_t max_line() const noexcept { return max_line_; }
  [[nodiscard]] SendLedger& ledger() noexcept { return ledger_; }
  [[nodiscard]] bool acks() const noexcept { return acks_; }

 private:
  enum class Phase {
    greeting,    // connected, waiting for the server's first line
    capping,     // a mux server: waiting for the answer to /cap ids (or /since)
    reclaiming,  // back after a reconnect, our nick still held by our ghost: asking again
    ready,       // lines go out as typed
  };

  bool greet(std::string_view line);
  bool capped(std::string_view line);
  bool nick_answer(std::string_view line);
  void reclaim_later();
  void send_reclaim(const std::string& nick);
  void become_ready();
  [[nodiscard]] std::string current_nick() const;

  EventLoop& loop_;
  Events& events_;
  RoomRoster& roster_;
  std::string nick_;  // --nick, sent once the server has greeted us
  std::string server_;
  bool quiet_;  // -q: the welcome is not shown
  Phase phase_ = Phase::greeting;
  bool ever_ready_ = false;
  bool mux_server_ = false;
  // Acks (/cap acks, a mux server): which lines the server confirmed, and which to send again.
  bool acks_ = false;
  SendLedger ledger_{SendLedger::make_writer()};
  // Message ids (a mux server, /cap ids): the room's epoch and the last id seen, for /since.
  std::string epoch_;
  std::uint64_t last_id_ = 0;
  bool recovering_ = false;  // /since sent, its answer not yet in
  std::size_t max_line_;
  std::string reclaiming_;  // after a reconnect: the nick we asked back, until the answer
  // Reconnect secrets (/cap ids): the current session's, and that of the session holding our
  // nick (the one a reclaim proves); kept in this process only.
  std::string session_secret_;
  std::string nick_secret_;
  bool nick_refused_ = false;
  unsigned reclaim_tries_ = 0;
  EventLoop::TimerId reclaim_timer_ = 0;
  bool names_follow_ = false;  // the next line is the /who line that follows the /cap answer
};

}  // namespace mux::chat
