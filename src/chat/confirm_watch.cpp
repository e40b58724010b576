#include "chat/confirm_watch.hpp"

#include <fmt/format.h>

namespace mux::chat {

std::string ConfirmWatch::failure(Verdict verdict, std::string_view server,
                                  std::size_t unsent) const {
  double secs = std::chrono::duration<double>(timeout_).count();
  if (verdict == Verdict::not_taken) {
    return fmt::format(
        "{} took none of our last {} bytes for {:g} s, so they were not delivered (see "
        "--confirm-timeout)",
        server, unsent, secs);
  }
  return fmt::format(
      "{} did not close the connection within {:g} s of the end of input, so delivery of the "
      "last lines is unconfirmed (see --confirm-timeout)",
      server, secs);
}

}  // namespace mux::chat
