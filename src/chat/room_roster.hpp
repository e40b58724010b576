// RoomRoster: who is in the chat room, as the chat client learns it from what the server says
// (the welcome, /who answers, join, leave and rename notices, relayed lines), and the Tab
// completion of a nick from it. Owned by the chat client, which feeds it every line the server
// sends; the line editor asks it to complete. Pure: no terminal, no socket.
//
// Bounded: a server (or a room of 300,000) can name more people than anyone will Tab-complete,
// so it remembers the kMaxNames most recently seen names (a line, a join or a rename refreshes a
// name) and forgets the least recently seen beyond that; names longer than any nick are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
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
  static constexpr std::size_t kMaxNames = 4096;
  // A nick is at most 32 characters of up to 4 UTF-8 bytes each.
  static constexpr std::size_t kMaxNameBytes = 128;

  // A line from the server, without its newline.
  void observe(std::string_view line);

  // Our own nick (from the welcome and our renames); empty until the server said it.
  [[nodiscard]] const std::string& own_nick() const noexcept { return own_nick_; }
  // The names remembered, sorted.
  [[nodiscard]] std::vector<std::string> nicks() const;

  // Completes the nick being typed at the end of `before_cursor` (case-insensitively, never our
  // own): one match becomes the whole nick followed by ": " at the start of the line or " "
  // elsewhere; several extend to their common start, or are listed when that adds nothing.
  [[nodiscard]] Completion complete(std::string_view before_cursor) const;

 private:
  void rename(std::string_view from, std::string_view to);
  void remember(std::string_view name);
  void forget(std::string_view name);

  // Name -> when it was last seen (a tick of seen_clock_); sorted by name for completion.
  std::map<std::string, std::uint64_t, std::less<>> nicks_;
  // When last seen -> name: the front is the next to forget.
  std::map<std::uint64_t, std::string> by_age_;
  std::uint64_t seen_clock_ = 0;
  std::string own_nick_;
};

}  // namespace mux::chat
