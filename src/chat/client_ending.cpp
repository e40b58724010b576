#include "chat/client_ending.hpp"

#include <fmt/format.h>

namespace mux::chat {
namespace {

Ending reconnect(std::string why) {
  return {Ending::Action::reconnect, std::move(why)};
}
Ending fail(std::string why) {
  return {Ending::Action::fail, std::move(why)};
}

}  // namespace

bool transient_end(std::string_view reason) {
  return reason == "server shutting down" || reason.starts_with("server full");
}

Ending server_closed(const EndFacts& facts) {
  const std::optional<std::string>& reason = facts.end_reason;
  if (reason && !facts.can_reconnect)
    return fail(fmt::format("{} ended the session: {}", facts.server, *reason));
  if (!facts.greeted) {
    return fail(fmt::format(
        "connection to {} closed by the server before any chat welcome, so nothing was sent",
        facts.server));
  }
  if (reason) {
    if (facts.can_reconnect && transient_end(*reason)) return reconnect(*reason);
    return fail(fmt::format("{} ended the session: {}", facts.server, *reason));
  }
  if (!facts.output_shut_down) {
    if (facts.can_reconnect) return reconnect("closed by the server");
    return fail(fmt::format("connection to {} closed by the server{}", facts.server,
                            facts.input_closed ? " before all input was sent" : ""));
  }
  if (std::size_t unacked = facts.unconfirmed; unacked > 0) {
    // Numbered, they go again to a server that says which it has.
    if (facts.can_reconnect && facts.numbered) return reconnect("closed before confirming");
    return fail(
        fmt::format("{} closed the connection before confirming {} line{}: they may not "
                    "have been delivered",
                    facts.server, unacked, unacked == 1 ? "" : "s"));
  }
  return {Ending::Action::delivered, {}};
}

Ending connection_failed(const EndFacts& facts, std::string_view why) {
  if (facts.can_reconnect && (!facts.end_reason || transient_end(*facts.end_reason)))
    return reconnect(std::string(why));
  std::string what = fmt::format("connection to {}: {}", facts.server, why);
  if (facts.end_reason)
    what += fmt::format(" (the server ended the session: {})", *facts.end_reason);
  return fail(std::move(what));
}

Ending after_loss(const EndFacts& facts, std::string_view why, bool acks, bool held,
                  std::size_t lines_on_link) {
  if (acks && facts.input_closed && !held && facts.unconfirmed == 0)
    return {Ending::Action::delivered, {}};
  if (!acks && facts.input_closed && lines_on_link > 0) {
    return fail(
        fmt::format("connection to {} lost ({}) before the server confirmed our last lines: {} "
                    "line{} sent on it may not have been delivered",
                    facts.server, why, lines_on_link, lines_on_link == 1 ? "" : "s"));
  }
  return {};
}

}  // namespace mux::chat
