#include "chat/typed_lines.hpp"

#include <vector>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"

namespace mux::chat {

std::string TypedLines::frame(std::string_view line, std::size_t max_line, SendLedger* ledger) {
  std::string out;
  std::vector<std::string> pieces = split_line(line, max_line);
  if (pieces.size() > 1) cut_ = true;
  for (std::string& piece : pieces) {
    out += piece;
    out += '\n';
    // The server acknowledges messages, not commands nor empty lines.
    if (ledger != nullptr && SendLedger::is_message(piece)) ledger->sent(std::move(piece));
  }
  ++lines_on_link_;
  return out;
}

std::string TypedLines::frame_resend(SendLedger& ledger) {
  std::string out;
  for (std::string& piece : ledger.resend()) {
    out += piece;
    out += '\n';
    ledger.sent(std::move(piece));
    ++lines_on_link_;
  }
  return out;
}

std::string TypedLines::unsent_note(const SendLedger& ledger) const {
  std::string note = held_.unsent_note();
  if (std::size_t unconfirmed = ledger.unconfirmed(); unconfirmed > 0)
    note += fmt::format("; {} sent line{} not confirmed", unconfirmed, unconfirmed == 1 ? "" : "s");
  return note;
}

}  // namespace mux::chat
