// ResendQueue: the lines chat-client was given while it could not send them (before the
// server's welcome, or while reconnecting), kept in order to go out once it can. Bounded by bytes:
// past the bound the caller stops reading (a pipe) or refuses the line with a notice (a
// terminal), so nothing is dropped silently; what is still queued when the client gives up is
// counted in its error line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mux::chat {

class ResendQueue {
 public:
  explicit ResendQueue(std::size_t max_bytes) : max_bytes_(max_bytes) {}

  // Over the bound: take no more.
  [[nodiscard]] bool full() const noexcept { return bytes_ > max_bytes_; }
  void push(std::string_view line) {
    bytes_ += line.size() + 1;
    lines_.emplace_back(line);
  }
  // Everything queued, in order; the queue is empty afterwards.
  std::vector<std::string> take() {
    bytes_ = 0;
    return std::exchange(lines_, {});
  }
  [[nodiscard]] bool empty() const noexcept { return lines_.empty(); }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  // "; N typed line(s) not sent", or nothing when empty: the end of a give-up error line.
  [[nodiscard]] std::string unsent_note() const;

 private:
  std::size_t max_bytes_;
  std::vector<std::string> lines_;
  std::size_t bytes_ = 0;
};

}  // namespace mux::chat
