#include "core/base/line_framer.hpp"

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
    // A '\r' at the end does not count toward the limit: it is the CR of a CRLF, or may turn out
    // to be one when the '\n' arrives in the next read.
    char last = !piece.empty() ? piece.back() : (pending_.empty() ? '\0' : pending_.back());
    std::size_t limit = max_line_ + (last == '\r' ? 1 : 0);
    if (pending_.size() + piece.size() > limit) {
      std::size_t room = max_line_ - std::min(pending_.size(), max_line_);
      pending_.append(piece.substr(0, room));
      // Exactly max_line_ bytes: a '\r' where the cut lands is text, not a line end.
      pending_.resize(max_line_);
      on_line(pending_, true);
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
