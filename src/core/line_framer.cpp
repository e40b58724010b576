#include "core/line_framer.hpp"

#include <algorithm>

namespace mux {

void LineFramer::emit(std::string_view text, bool truncated, const LineHandler& on_line) {
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  on_line(text, truncated);
}

void LineFramer::feed(std::string_view bytes, const LineHandler& on_line) {
  while (!bytes.empty()) {
    std::size_t newline = bytes.find('\n');
    std::string_view piece = bytes.substr(0, newline);  // up to (not including) the newline
    bool ends_line = newline != std::string_view::npos;
    bytes.remove_prefix(ends_line ? newline + 1 : bytes.size());

    if (discarding_) {
      if (ends_line) discarding_ = false;
      continue;
    }
    // A '\r' right before the '\n' does not count toward the limit.
    std::size_t limit = max_line_ + ((ends_line && !piece.empty() && piece.back() == '\r') ? 1 : 0);
    if (pending_.size() + piece.size() > limit) {
      std::size_t room = max_line_ - std::min(pending_.size(), max_line_);
      pending_.append(piece.substr(0, room));
      emit(pending_, true, on_line);
      pending_.clear();
      discarding_ = !ends_line;
      continue;
    }
    if (!ends_line) {
      pending_.append(piece);
      continue;
    }
    if (pending_.empty()) {
      emit(piece, false, on_line);  // the common case: no copy
    } else {
      pending_.append(piece);
      emit(pending_, false, on_line);
      pending_.clear();
    }
  }
}

void LineFramer::flush_partial(const LineHandler& on_line) {
  // Quiet time ends an overlong line's dropped tail as well.
  discarding_ = false;
  if (pending_.empty()) return;
  std::string line;
  line.swap(pending_);
  emit(line, false, on_line);
}

}  // namespace mux
