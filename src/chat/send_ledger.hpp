// SendLedger: what chat-client knows of the messages it sent to a mux server that confirms them
// (issue 23, /cap acks). Each message is confirmed in order by "* ack ID" once the room stored it.
// With a writer key ("/cap acks WRITER", WRITER 32 random hex digits this process made) the
// server also numbers this client's messages within that writer (1, 2, ... across connections)
// and says, on each new connection, how many of them it has stored ("* cap acks last=N"): the
// messages a dropped connection left unconfirmed are then sent again exactly once, those the
// room already has never. A server that answers without a number gets nothing again: what a
// drop left unconfirmed is only counted. Pure bookkeeping, no I/O: unit tested in-process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mux::chat {

class SendLedger {
 public:
  explicit SendLedger(std::string writer) : writer_(std::move(writer)) {}
  // A writer key from the kernel's CSPRNG: 128 bits as 32 lowercase hex digits.
  static std::string make_writer();

  // "/cap acks WRITER\n": what the client asks on every connection to a mux server.
  [[nodiscard]] std::string request() const;
  // The server acknowledges messages: not commands, not empty lines ("//" escapes a message).
  static bool is_message(std::string_view piece);

  // A message written to the current connection.
  void sent(std::string piece);
  // The server's lines about acks: "* cap acks" or "* cap acks last=N" (its answer), "* ack ID"
  // (one more message confirmed; ID 0: it reached only this server's clients), "* ack again" (a
  // message the room already had, not relayed twice). nullopt when `line` is none of these;
  // else whether it was the answer with a number (the caller then sends resend() first).
  struct Seen {
    bool answer = false;
  };
  std::optional<Seen> on_line(std::string_view line);

  // The connection dropped. Numbered: its unconfirmed messages wait for the next connection's
  // answer. Else they are counted as possibly lost (returns how many, for a notice).
  std::size_t dropped();
  // After the answer with a number: the messages to send again, in order (the server has
  // those numbered up to N already, they are confirmed); sent() them again.
  std::vector<std::string> resend();

  [[nodiscard]] bool numbered() const noexcept { return numbered_; }
  [[nodiscard]] bool answered() const noexcept { return answered_; }
  // Messages written and not yet confirmed (on this connection, or waiting to be sent again).
  [[nodiscard]] std::size_t unconfirmed() const noexcept { return pending_.size(); }
  [[nodiscard]] std::size_t unconfirmed_bytes() const noexcept { return pending_bytes_; }
  // Messages a drop left unconfirmed that were not sent again (a server without numbers).
  [[nodiscard]] std::size_t lost() const noexcept { return lost_; }
  // Messages confirmed as reaching this server's clients only (Redis out of reach).
  [[nodiscard]] std::size_t local_only() const noexcept { return local_only_; }
  // Messages the server already had when a reconnect asked (confirmed by its answer).
  [[nodiscard]] std::size_t found_stored() const noexcept { return found_stored_; }
  // What is left to say at the end: empty when every message was confirmed room-wide.
  [[nodiscard]] std::vector<std::string> problems(std::string_view server) const;

 private:
  struct Pending {
    std::uint64_t number;  // the writer's number (0 when the server does not number)
    std::string text;
  };
  void confirm();

  std::string writer_;
  bool answered_ = false;     // this connection's answer to /cap acks came
  bool numbered_ = false;     // ... with a number: resends are exactly once
  std::uint64_t stored_ = 0;  // the number in the last answer
  std::uint64_t next_ = 0;    // the last number given to a message sent
  std::deque<Pending> pending_;
  std::size_t pending_bytes_ = 0;
  std::size_t lost_ = 0;
  std::size_t local_only_ = 0;
  std::size_t found_stored_ = 0;
};

}  // namespace mux::chat
