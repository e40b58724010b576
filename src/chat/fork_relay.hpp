// --serve fork: each client is served by its own child process, which owns the client socket
// (framing, sanitizing, quiet-time flush, output queue and --max-queue) and talks to the parent
// over a socketpair. The parent keeps the one ChatRoom, so names, commands and broadcast behave
// exactly as in single mode.
//
// The link carries, parent to child, the bytes to write to the client, verbatim; the parent
// half-closes the link when the client must go (/quit, shutdown). Child to parent, one record per
// line, each ending in '\n' (sanitized text never contains '\n' or other control bytes):
//   L<text>          a line from the client
//   C<text>          a line cut at --max-line
//   Q<0|1><reason>   the client is leaving; 1 when it was too slow
//   R                the client is through the TLS handshake and the token check: it joins now
//                    (before R the parent's room does not know it; lines come only after R)
// The child closes the link and exits once the client's socket is closed. Both ends of the link
// are plain core Connections (Connection::plain: the client's TLS stays in the child).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "chat/chat_access.hpp"
#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "core/loop/admission.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/timed_pause.hpp"

namespace mux {

class ChildLink;

// Coalesces what the parent sends down idle links during one loop batch into one writev per link
// at the end of the batch (one write and one wakeup per child, however many senders spoke).
// Nothing is written to per-link memory per delivery: every page the parent writes after a fork
// stays behind as a copy in the older children. A block is recorded once with a bitmap of the
// links it goes to (a bit per link, so a broadcast to 1000 links costs 125 bytes of one shared
// buffer); the buffer keeps its capacity, so the same few pages are reused batch after batch.
class ForkFanOut {
 public:
  explicit ForkFanOut(EventLoop& loop) : loop_(loop) {}
  ForkFanOut(const ForkFanOut&) = delete;
  ForkFanOut& operator=(const ForkFanOut&) = delete;

  // A link takes a slot for its lifetime; slots are small integers, the bits of the bitmaps.
  std::uint32_t attach(ChildLink& link);
  // Forgets the slot's pending deliveries, so the flush never touches a closed link.
  void detach(std::uint32_t slot) noexcept;
  // Queues `block` for the link in `slot`, to be written when the batch ends.
  void add(std::uint32_t slot, const Block& block);
  [[nodiscard]] bool pending() const noexcept { return !groups_.empty(); }

 private:
  // One block and where its bitmap lies in words_.
  struct Group {
    Block block;
    std::size_t first_word;
    std::size_t words;
  };

  [[nodiscard]] bool has_bit(const Group& group, std::uint32_t slot) const noexcept;
  void flush();

  EventLoop& loop_;
  std::vector<ChildLink*> links_;  // by slot; null when free
  std::vector<std::uint32_t> free_slots_;
  std::vector<Group> groups_;
  std::vector<std::uint64_t> words_;
  std::vector<const Block*> scratch_;  // one link's blocks during flush()
  bool flush_scheduled_ = false;
};

// The parent's side of one child: a room member whose deliveries go down the link (a plain
// Connection on the parent's end of the socketpair).
class ChildLink final : public ChatMember, private Connection::Owner {
 public:
  // `origin` names the client in the room's log; `logger` tells of a client that left before
  // joining (a failed handshake, a wrong token).
  ChildLink(SessionContext& context, ForkFanOut& fan_out, Fd link, pid_t pid,
            AdmissionTicket ticket, ChatRoom& room, MemberOwner& owner, std::string origin = {},
            Logger* logger = nullptr);
  ChildLink(const ChildLink&) = delete;
  ChildLink& operator=(const ChildLink&) = delete;
  ~ChildLink() override;

  void deliver(const Block& block) override;
  void close_after_output() override;
  // Stops reading the link for `pause`: the child's writes to it then back up, and the child
  // stops reading its client (ChildRelay holds its session while the link is full).
  void pause_input(std::chrono::milliseconds pause) override;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  friend class ForkFanOut;

  // Writes this batch's blocks for this link (from ForkFanOut::flush); what the link does not
  // take now waits in the connection's queue.
  void write_batch(std::span<const Block* const> blocks);
  void enforce_queue_limit();
  // Connection::Owner: the records from the child, and the link's end.
  void on_data(std::string_view bytes) override;
  void on_end_of_input() override;
  void on_closed(std::string_view reason) override;
  void handle_record(std::string_view record);
  void close(std::string_view reason);

  SessionContext& context_;
  ForkFanOut& fan_out_;
  pid_t pid_;
  AdmissionTicket ticket_;  // the client's admission slot, held while the member exists
  ChatRoom& room_;
  MemberOwner& owner_;
  LineFramer framer_;
  Connection link_;
  std::uint32_t slot_;
  TimedPause pause_;  // the client is over its rate: its link is not read until it ends
  std::string origin_;
  Logger* logger_;
  bool closing_ = false;
  bool closed_ = false;
  bool joined_ = false;  // the child sent R
};

// The body of the child: serves `client` until it is gone, relaying over `link`. Returns the
// child's exit status.
// `make_stream` is the server's stream factory (TLS), null for plain TCP.
// `access` says whether a token is required (checked here, in the child; the throttle's table is
// shared with the parent and the other children).
int serve_client_in_child(Fd client, Fd link, std::size_t max_line, std::size_t max_queue,
                          StreamFactory make_stream = nullptr, const ChatAccess& access = {});

}  // namespace mux
