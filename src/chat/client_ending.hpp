// How chat-client judges the end of a connection to its server: the server closed it, it failed
// (a reset, a failed write), or the client lost it. Each end is either proof that every line was
// delivered (the run may end with 0), a drop a reconnect can mend, or a failure to report. The
// rules are the client's promise (exit 0 only when delivery is proven), so they live here as pure
// functions over the facts, unit tested in-process; ChatClient gathers the facts and acts.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mux::chat {

// What an end leads to, and `why` (the reconnect's reason, or the error line without
// "mux: error: ").
struct Ending {
  enum class Action {
    reconnect,  // a drop a new connection can mend (the client's reconnect rules permitting)
    fail,       // exit 1 with `why`
    delivered,  // every line we sent was read: check the ledger and end
    go_on,      // not decided here: the caller goes on
  };
  Action action = Action::go_on;
  std::string why;
};

// An end the server announced that a later connection may not meet: a restart, a full server.
[[nodiscard]] bool transient_end(std::string_view reason);

// What the client knows when a connection ends.
struct EndFacts {
  std::string_view server;                // "host:port", for the messages
  std::optional<std::string> end_reason;  // a notice said the server ended the session
  bool can_reconnect = false;             // a mux server, and --no-reconnect not given
  bool greeted = false;                   // a mux server's welcome came (now or before)
  bool output_shut_down = false;          // our half-close went out
  bool input_closed = false;              // stdin ended (or exit, /quit)
  std::size_t unconfirmed = 0;            // lines sent and not confirmed (acks)
  bool numbered = false;                  // the server numbers our lines (/cap acks WRITER)
};

// The server's orderly close. Only after our own half-close, with no notice that it ended the
// session, does it prove the server read every line we sent (it reads to our end of input
// before closing; a server that drops unread bytes resets the connection instead).
[[nodiscard]] Ending server_closed(const EndFacts& facts);

// A reset or a failed write (`why`): bytes we sent may have been thrown away unread, so this is
// a failure even after our half-close, unless we reconnect.
[[nodiscard]] Ending connection_failed(const EndFacts& facts, std::string_view why);

// The connection was lost (`why`) and the client may reconnect: whether it need not (its input
// is over and every line confirmed: `acks`, nothing `held`) or must not (without acks, its last
// `lines_on_link` lines went out on this connection: only its close could have confirmed them,
// and sending them again could repeat them); go_on otherwise.
[[nodiscard]] Ending after_loss(const EndFacts& facts, std::string_view why, bool acks, bool held,
                                std::size_t lines_on_link);

}  // namespace mux::chat
