// ServerLines: what chat-client does with the bytes its server sends. They are cut into bounded
// lines; each goes first to the ClientHandshake (which takes its own answers: the cap replies,
// acks, the /since replay's bookkeeping); a notice that the server ended the session is noted for
// the client's ending rules; the rest is shown through the ClientScreen (nothing a server sends
// reaches the terminal raw) and watched by the RoomRoster (who is here, our nick). A line the
// server left unterminated is shown once it has been quiet for kQuietTime, as the server does.
//
// Why a class of its own: this is the whole reading side of the client, and it is the same for
// every connection; ChatClient only says when a connection starts and ends.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/line_framer.hpp"
#include "core/loop/event_loop.hpp"

namespace mux {

class ClientScreen;

namespace chat {

class ClientHandshake;
class RoomRoster;

class ServerLines {
 public:
  // Like the server: a line the server left unterminated is shown once it has been quiet this
  // long.
  static constexpr std::chrono::milliseconds kQuietTime{100};

  ServerLines(EventLoop& loop, ClientScreen& screen, RoomRoster& roster, ClientHandshake& handshake,
              std::size_t max_line);
  ServerLines(const ServerLines&) = delete;
  ServerLines& operator=(const ServerLines&) = delete;

  // A new connection: nothing of the last one's lines or its end is kept.
  void new_link();
  // Bytes from the server: every complete line handled and shown now.
  void feed(std::string_view bytes);
  // The server's input ended or the connection closed: a last unterminated line is shown too.
  void flush();
  // The reason a server notice gave for ending the session (none yet: nullopt).
  [[nodiscard]] const std::optional<std::string>& end_reason() const noexcept {
    return end_reason_;
  }

 private:
  void show(std::string_view line, bool cut);
  void rearm_quiet_timer(bool mid_line);

  EventLoop& loop_;
  ClientScreen& screen_;
  RoomRoster& roster_;
  ClientHandshake& handshake_;
  std::size_t max_line_;
  LineFramer framer_;
  EventLoop::TimerId quiet_timer_ = 0;
  std::optional<std::string> end_reason_;
};

}  // namespace chat
}  // namespace mux
