// LineFramer: turns a byte stream into lines. A line ends at '\n' (a '\r' just before it is
// dropped). Lines longer than the limit are cut at the limit and the rest of that line is
// discarded. Bytes without a newline wait in the framer until more arrive or the owner decides
// the sender has gone quiet and calls flush_partial() (chat clients that send one message per
// write and never a newline). Owned by one connection; knows nothing of what the lines mean.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace mux {

class LineFramer {
 public:
  // text never contains '\n'; truncated is true when the line was cut at the limit.
  using LineHandler = std::function<void(std::string_view text, bool truncated)>;

  explicit LineFramer(std::size_t max_line) : max_line_(max_line == 0 ? 1 : max_line) {}

  void feed(std::string_view bytes, const LineHandler& on_line);
  // Delivers the pending partial line, if any, as if it had ended.
  void flush_partial(const LineHandler& on_line);

  [[nodiscard]] bool has_partial() const noexcept { return !pending_.empty(); }
  [[nodiscard]] std::size_t max_line() const noexcept { return max_line_; }

 private:
  void emit(std::string_view text, bool truncated, const LineHandler& on_line);

  std::string pending_;
  std::size_t max_line_;
  bool discarding_ = false;  // inside the dropped tail of an overlong line
};

}  // namespace mux
