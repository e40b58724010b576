#include "chat/server_lines.hpp"

#include <utility>

#include "chat/chat_protocol.hpp"
#include "chat/client_handshake.hpp"
#include "chat/client_terminal.hpp"
#include "chat/room_roster.hpp"

namespace mux::chat {

ServerLines::ServerLines(EventLoop& loop, ClientScreen& screen, RoomRoster& roster,
                         ClientHandshake& handshake, std::size_t max_line)
    : loop_(loop),
      screen_(screen),
      roster_(roster),
      handshake_(handshake),
      max_line_(max_line),
      framer_(max_line) {}

void ServerLines::new_link() {
  framer_ = LineFramer(max_line_);
  end_reason_.reset();
}

void ServerLines::feed(std::string_view bytes) {
  framer_.feed(bytes, [this](std::string_view line, bool cut) { show(line, cut); });
  screen_.flush();
  rearm_quiet_timer(!bytes.empty() && bytes.back() != '\n');
}

void ServerLines::flush() {
  framer_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
  screen_.flush();
}

void ServerLines::show(std::string_view line, bool cut) {
  if (!handshake_.filter(line)) return;
  if (!end_reason_) {
    if (auto reason = notice::session_end_reason(line)) end_reason_ = std::string(*reason);
  }
  // A server that is not mux may send anything; nothing it sends reaches the terminal raw.
  roster_.observe(screen_.room_line(line, cut));
}

void ServerLines::rearm_quiet_timer(bool mid_line) {
  loop_.cancel_timer(std::exchange(quiet_timer_, 0));
  if (!mid_line) return;
  quiet_timer_ = loop_.add_timer(kQuietTime, [this] {
    quiet_timer_ = 0;
    flush();
  });
}

}  // namespace mux::chat
