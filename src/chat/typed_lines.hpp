// TypedLines: what chat-client writes of what was typed. Lines typed while it cannot send (not
// connected yet, or reconnecting) wait in order in a bounded ResendQueue; a line longer than the
// server's --max-line goes as several (cut on character boundaries, so the server cuts nothing
// off); each message is noted in the SendLedger when the server confirms messages; and the lines
// written on the current connection are counted (without acks, only that connection's close can
// confirm them). Pure: it makes the bytes, the client writes them; unit tested in-process.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "chat/resend_queue.hpp"
#include "chat/send_ledger.hpp"

namespace mux::chat {

class TypedLines {
 public:
  explicit TypedLines(std::size_t max_held) : held_(max_held) {}

  // The lines typed while it cannot send, in order.
  [[nodiscard]] ResendQueue& held() noexcept { return held_; }
  [[nodiscard]] const ResendQueue& held() const noexcept { return held_; }

  // The bytes for one typed line to a server that takes lines of up to `max_line` bytes; each
  // message is noted in `ledger` (null: the server does not confirm). Counts one line written.
  std::string frame(std::string_view line, std::size_t max_line, SendLedger* ledger);
  // True once, the first time a line had to be cut (the client says so once per run).
  [[nodiscard]] bool first_cut() noexcept {
    bool first = cut_ && !told_cut_;
    if (first) told_cut_ = true;
    return first;
  }
  // The bytes of the messages the ledger sends again (the server said which it has), each noted
  // again and counted as written.
  std::string frame_resend(SendLedger& ledger);

  // A new connection: nothing written on it yet.
  void new_link() noexcept { lines_on_link_ = 0; }
  [[nodiscard]] std::size_t lines_on_link() const noexcept { return lines_on_link_; }

  // The end of a give-up error line: what was typed and never sent, and what was sent and not
  // confirmed.
  [[nodiscard]] std::string unsent_note(const SendLedger& ledger) const;

 private:
  ResendQueue held_;
  bool cut_ = false;
  bool told_cut_ = false;
  std::size_t lines_on_link_ = 0;
};

}  // namespace mux::chat
