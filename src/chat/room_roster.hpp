// RoomRoster: who is in the chat room, as the chat client learns it from what the server says
// (the welcome, /who answers, join, leave and rename notices, relayed lines), and the Tab
// completion of a nick from it. Owned by the chat client, which feeds it every line the server
// sends; the line editor asks it to complete. Pure: no terminal, no socket.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace mux::chat {

// What Tab does to the text before the cursor: replace its last `replace_bytes` bytes by
// `insert`; with nothing to insert and several candidates, `choices` lists them.
struct Completion {
  std::size_t replace_bytes = 0;
  std::string insert;
  std::vector<std::string> choices;
};

class RoomRoster {
 public:
  // A line from the server, without its newline.
  void observe(std::string_view line);

  // Our own nick (from the welcome and our renames); empty until the server said it.
  [[nodiscard]] const std::string& own_nick() const noexcept { return own_nick_; }
  [[nodiscard]] const std::set<std::string>& nicks() const noexcept { return nicks_; }

  // Completes the nick being typed at the end of `before_cursor` (case-insensitively, never our
  // own): one match becomes the whole nick followed by ": " at the start of the line or " "
  // elsewhere; several extend to their common start, or are listed when that adds nothing.
  [[nodiscard]] Completion complete(std::string_view before_cursor) const;

 private:
  void rename(std::string_view from, std::string_view to);

  std::set<std::string> nicks_;
  std::string own_nick_;
};

}  // namespace mux::chat
