#include "chat/resend_queue.hpp"

#include <fmt/format.h>

namespace mux::chat {

std::string ResendQueue::unsent_note() const {
  if (lines_.empty()) return {};
  return fmt::format("; {} typed line{} not sent", lines_.size(), lines_.size() == 1 ? "" : "s");
}

}  // namespace mux::chat
