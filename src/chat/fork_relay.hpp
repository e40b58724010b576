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
// The child closes the link and exits once the client's socket is closed.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string_view>

#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"

namespace mux {

// The parent's side of one child: a room member whose deliveries go down the link.
class ChildLink final : public ChatMember {
 public:
  ChildLink(SessionContext& context, Fd link, pid_t pid, ChatRoom& room, MemberOwner& owner);
  ChildLink(const ChildLink&) = delete;
  ChildLink& operator=(const ChildLink&) = delete;
  ~ChildLink() override;

  void deliver(const Block& block) override;
  void close_after_output() override;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  [[nodiscard]] bool write_through(const Block& block);
  void handle_events(std::uint32_t events);
  // Reads and handles one chunk of records; false when nothing more is to be read now.
  bool read_records();
  void handle_record(std::string_view record);
  void close(std::string_view reason);

  SessionContext& context_;
  Fd link_;
  pid_t pid_;
  ChatRoom& room_;
  MemberOwner& owner_;
  LineFramer framer_;
  SocketWriter writer_;
  bool closing_ = false;
  bool closed_ = false;
};

// The body of the child: serves `client` until it is gone, relaying over `link`. Returns the
// child's exit status.
int serve_client_in_child(Fd client, Fd link, std::size_t max_line, std::size_t max_queue);

}  // namespace mux
