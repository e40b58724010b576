#include "chat/fork_relay.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "chat/token_gate.hpp"
#include "core/net.hpp"

namespace mux {
namespace {

// Sanitizing can turn one input byte into up to three (U+FFFD); a record also has its tag.
std::size_t max_record_bytes(std::size_t max_line) {
  return 3 * max_line + 64;
}

}  // namespace

namespace {

constexpr std::uint32_t kSlotBits = 64;
// Iovecs per sendmsg when writing one link's batch; a batch longer than this takes more calls.
constexpr std::size_t kBatchIovecs = 64;

}  // namespace

std::uint32_t ForkFanOut::attach(ChildLink& link) {
  if (!free_slots_.empty()) {
    std::uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    links_[slot] = &link;
    return slot;
  }
  links_.push_back(&link);
  return static_cast<std::uint32_t>(links_.size() - 1);
}

void ForkFanOut::detach(std::uint32_t slot) noexcept {
  links_[slot] = nullptr;
  // Clearing its bits lets the slot be reused at once, even within this batch.
  std::size_t word = slot / kSlotBits;
  std::uint64_t mask = ~(std::uint64_t{1} << (slot % kSlotBits));
  for (const Group& group : groups_) {
    if (word < group.words) words_[group.first_word + word] &= mask;
  }
  free_slots_.push_back(slot);
}

void ForkFanOut::add(std::uint32_t slot, const Block& block) {
  // A broadcast hands the same block to every member in turn: one group for all of them. A
  // block seen twice for one link (or a new block) starts a new group, which keeps each link's
  // blocks in the order they were delivered.
  if (groups_.empty() || groups_.back().block != block || has_bit(groups_.back(), slot))
    groups_.push_back(Group{block, words_.size(), 0});
  Group& group = groups_.back();
  std::size_t word = slot / kSlotBits;
  if (word >= group.words) {
    // The last group's bitmap ends words_, so it can grow in place (new words are zero).
    words_.resize(group.first_word + word + 1, 0);
    group.words = word + 1;
  }
  words_[group.first_word + word] |= std::uint64_t{1} << (slot % kSlotBits);
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  // The fan-out belongs to the server and outlives its loop's batches.
  loop_.defer([this] { flush(); });
}

bool ForkFanOut::has_bit(const Group& group, std::uint32_t slot) const noexcept {
  std::size_t word = slot / kSlotBits;
  return word < group.words &&
         (words_[group.first_word + word] >> (slot % kSlotBits) & std::uint64_t{1}) != 0;
}

void ForkFanOut::flush() {
  flush_scheduled_ = false;
  // Writing never delivers or closes synchronously (a failing writer defers its report), so the
  // groups stay as they are during the walk.
  for (std::size_t slot = 0; slot < links_.size(); ++slot) {
    ChildLink* link = links_[slot];
    if (link == nullptr) continue;
    scratch_.clear();
    for (const Group& group : groups_) {
      if (has_bit(group, static_cast<std::uint32_t>(slot))) scratch_.push_back(&group.block);
    }
    if (!scratch_.empty()) link->write_batch(scratch_);
  }
  // clear() keeps the capacity: the next batches reuse the same pages.
  groups_.clear();
  words_.clear();
  scratch_.clear();
}

ChildLink::ChildLink(SessionContext& context, ForkFanOut& fan_out, Fd link, pid_t pid,
                     AdmissionTicket ticket, ChatRoom& room, MemberOwner& owner, std::string origin,
                     Logger* logger)
    : context_(context),
      fan_out_(fan_out),
      link_(std::move(link)),
      pid_(pid),
      ticket_(std::move(ticket)),
      room_(room),
      owner_(owner),
      framer_(max_record_bytes(context.max_line)),
      writer_(context.loop, link_.get(),
              [this](int error) {
                // Deferred: a failed write may surface inside the room's walk over its members. A
                // child that exited may have left its last records (its Q) unread: take them first.
                context_.loop.defer([this, error] {
                  while (!closed_ && read_records()) {
                  }
                  close(fmt::format("lost its process: {}", std::strerror(error)));
                });
              }),
      slot_(fan_out.attach(*this)),
      origin_(std::move(origin)),
      logger_(logger) {
  context_.loop.watch(link_.get(), EPOLLIN,
                      [this](std::uint32_t events) { handle_events(events); });
  // Shed while its child still waits for the handshake or the token: the child has nothing to
  // finish, and a graceful close would keep its process (and its pid slot) through the linger.
  ticket_.on_shed([this] {
    ::kill(pid_, SIGKILL);
    close_after_output();
  });
}

ChildLink::~ChildLink() {
  context_.loop.cancel_timer(pause_timer_);
  if (!closed_) fan_out_.detach(slot_);
  context_.loop.unwatch(link_.get());
}

// Every child inherits the parent's memory as it was at its fork, and each page the parent writes
// afterwards stays behind as a copy held by the older children. Queueing a broadcast line writes
// to every member's queue, so a join announced to N children left ~N/2 pages behind in each fork:
// fork-mode memory grew with the square of the clients. An idle link's deliveries therefore go to
// the shared fan-out, which touches no per-member memory and writes each link once per batch.
void ChildLink::deliver(const Block& block) {
  if (closed_) return;
  // Bytes already queued must go first: while there are any, the writer takes the rest too.
  if (writer_.queued() == 0) return fan_out_.add(slot_, block);
  writer_.send(block);
  enforce_queue_limit();
}

void ChildLink::enforce_queue_limit() {
  // The child enforces --max-queue on its client itself and reads its link eagerly, so this is
  // only a safety net against a stuck child. It is kept well above --max-queue: a child that is
  // merely short of CPU (a burst, a sanitizer build) must get the chance to find its slow client
  // and report it ("too slow: N bytes unsent") rather than be killed for lagging.
  const std::size_t stuck_limit = 4 * context_.max_queue + (std::size_t{1} << 20);
  if (writer_.queued() <= stuck_limit) return;
  writer_.flush();
  if (closed_ || writer_.queued() <= stuck_limit) return;
  // Far behind even so: the child cannot be served any more.
  ::kill(pid_, SIGKILL);
  context_.loop.defer([this] {
    room_.leave(*this, "too slow: its process stopped reading", true);
    close("too slow");
  });
}

void ChildLink::write_batch(std::span<const Block* const> blocks) {
  if (closed_) return;
  std::size_t done = 0;     // blocks written whole
  std::size_t partial = 0;  // bytes of blocks[done] written
  while (done < blocks.size()) {
    std::array<iovec, kBatchIovecs> iov{};
    std::size_t count = 0;
    std::size_t wanted = 0;
    for (std::size_t i = done; i < blocks.size() && count < iov.size(); ++i, ++count) {
      const std::string& bytes = **blocks[i];
      std::size_t skip = i == done ? partial : 0;
      // iovec wants a mutable pointer; sendmsg only reads through it.
      iov[count] = {const_cast<char*>(bytes.data() + skip), bytes.size() - skip};
      wanted += bytes.size() - skip;
    }
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = count;
    ssize_t n = ::sendmsg(link_.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      break;  // EAGAIN or an error: the writer queues it, or meets the error and reports it
    auto left = static_cast<std::size_t>(n);
    while (left > 0) {
      std::size_t rest = (*blocks[done])->size() - partial;
      if (left < rest) {
        partial += left;
        break;
      }
      left -= rest;
      partial = 0;
      ++done;
    }
    if (static_cast<std::size_t>(n) < wanted) break;  // the link is full for now
  }
  if (done == blocks.size()) return;
  if (partial > 0) {
    writer_.send(std::string_view(**blocks[done]).substr(partial));
  } else {
    writer_.send(*blocks[done]);
  }
  for (std::size_t i = done + 1; i < blocks.size(); ++i)
    writer_.send(*blocks[i]);
  enforce_queue_limit();
}

void ChildLink::close_after_output() {
  if (closing_ || closed_) return;
  closing_ = true;
  auto shut_down_when_drained = [this] {
    writer_.when_drained([this] {
      if (!closed_) ::shutdown(link_.get(), SHUT_WR);
    });
  };
  // This link's last blocks may still wait in the fan-out, whose flush was deferred earlier in
  // this batch and so runs before this (the link outlives the batch: it is retired, not
  // destroyed).
  if (fan_out_.pending()) return context_.loop.defer(shut_down_when_drained);
  shut_down_when_drained();
}

void ChildLink::pause_input(std::chrono::milliseconds pause) {
  auto until = std::chrono::steady_clock::now() + pause;
  if (until > paused_until_) paused_until_ = until;
  if (pause_timer_ != 0 || closed_) return;
  pause_timer_ = context_.loop.add_timer(pause, [this] { end_pause(); });
  int fd = link_.get();
  context_.loop.modify(fd, context_.loop.interest(fd) & ~static_cast<std::uint32_t>(EPOLLIN));
}

void ChildLink::end_pause() {
  pause_timer_ = 0;
  if (closed_) return;
  auto left = paused_until_ - std::chrono::steady_clock::now();
  if (left > std::chrono::steady_clock::duration::zero()) {
    pause_timer_ = context_.loop.add_timer(std::chrono::ceil<std::chrono::milliseconds>(left),
                                           [this] { end_pause(); });
    return;
  }
  int fd = link_.get();
  context_.loop.modify(fd, context_.loop.interest(fd) | EPOLLIN);
}

void ChildLink::handle_events(std::uint32_t events) {
  if (events & EPOLLOUT) writer_.on_writable();
  if (!closed_ && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) read_records();
}

bool ChildLink::read_records() {
  ReadBuffer& buffer = context_.read_buffer;
  ssize_t n = ::read(link_.get(), buffer.data(), buffer.size());
  if (n > 0) {
    framer_.feed(std::string_view(buffer.data(), static_cast<std::size_t>(n)),
                 [this](std::string_view record, bool) { handle_record(record); });
    room_.end_of_input();
    return true;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
  // The child closes the link after sending its Q record; a link that ends without one means
  // the child died.
  close(n == 0 ? "its process ended" : fmt::format("lost its process: {}", std::strerror(errno)));
  return false;
}

void ChildLink::handle_record(std::string_view record) {
  if (record.empty() || closed_) return;
  std::string_view body = record.substr(1);
  switch (record.front()) {
    case 'L':
      room_.receive_line(*this, body, false);
      return;
    case 'C':
      room_.receive_line(*this, body, true);
      return;
    case 'R':
      if (!joined_ && !closing_) {
        joined_ = true;
        ticket_.authenticated();
        room_.join(*this, origin_);
      }
      return;
    case 'Q':
      // Answers to its last lines are queued by now; once they are down the link the child may
      // close the client (it waits for the link's end to know).
      if (!joined_ && logger_ != nullptr && !body.empty())
        logger_->info("{} left before joining ({})", origin_, body.substr(1));
      // Lines the room still holds (joining, a nick claim) are handled first; the room then
      // calls close_after_output().
      if (!body.empty() && !room_.leave(*this, body.substr(1), body.front() == '1')) return;
      close_after_output();
      return;
    default:
      return;  // a child of the same binary never sends anything else
  }
}

void ChildLink::close(std::string_view reason) {
  if (closed_) return;
  closed_ = true;
  context_.loop.cancel_timer(std::exchange(pause_timer_, 0));
  fan_out_.detach(slot_);
  writer_.detach();
  context_.loop.unwatch(link_.get());
  room_.leave(*this, reason, false);
  room_.gone(*this);
  owner_.release(*this);
}

namespace {

// The child's side: one ClientSession whose lines go up the link and whose output comes down it.
class ChildRelay final : private ClientSession::Listener {
 public:
  ChildRelay(SessionContext& context, Fd client, Fd link, const ChatAccess& access)
      : context_(context),
        link_(std::move(link)),
        link_writer_(context.loop, link_.get(),
                     [this](int) { session_.finish("server went away"); }),
        session_(context, std::move(client), *this),
        // The child has no log of its own: the reason goes up in the Q record, and the parent
        // logs it with the client's address.
        gate_(context.loop, access, peer_address(session_.fd()), gate_hooks()) {
    context_.loop.watch(link_.get(), EPOLLIN,
                        [this](std::uint32_t events) { handle_link(events); });
    if (session_.ready()) gate_.handshake_done();
  }
  ChildRelay(const ChildRelay&) = delete;
  ChildRelay& operator=(const ChildRelay&) = delete;
  ~ChildRelay() { context_.loop.unwatch(link_.get()); }

 private:
  TokenGate::Hooks gate_hooks() {
    TokenGate::Hooks hooks;
    // Tells the parent the client may join (see chat/chat_access.hpp).
    hooks.join = [this] { link_writer_.send(std::string_view("R\n")); };
    hooks.hold_reading = [this] { session_.hold_reading(); };
    hooks.send = [this](std::string_view text) { session_.send(make_block(std::string(text))); };
    hooks.finish = [this](std::string_view reason) { session_.finish(reason); };
    return hooks;
  }

  void on_ready() override { gate_.handshake_done(); }

  void on_line(std::string_view text, bool cut) override {
    if (gate_.take_line(text)) return;
    pending_ += cut ? 'C' : 'L';
    pending_ += text;
    pending_ += '\n';
  }
  void on_input_done() override {
    flush_pending();
    // The parent reads the link more slowly while this client is over its rate: stop reading the
    // client too, so the backlog stays in the client's TCP buffers, not in this process.
    if (!held_ && link_writer_.queued() > kLinkHighWater) {
      held_ = true;
      session_.hold_reading();
      link_writer_.when_drained([this] {
        held_ = false;
        session_.release_reading();
      });
    }
  }
  void on_leave(std::string_view reason, bool too_slow) override {
    flush_pending();
    link_writer_.send(fmt::format("Q{}{}\n", too_slow ? '1' : '0', reason));
  }
  void on_closed() override {
    context_.loop.add_timer(SessionContext::kCloseTimeout, [this] { context_.loop.stop(); });
    link_writer_.when_drained([this] { context_.loop.stop(); });
  }

  void flush_pending() {
    if (!pending_.empty()) link_writer_.send(make_block(std::exchange(pending_, {})));
  }

  void handle_link(std::uint32_t events) {
    if (events & EPOLLOUT) link_writer_.on_writable();
    if (events & (EPOLLHUP | EPOLLERR)) return parent_gone();
    if (!(events & EPOLLIN)) return;
    ReadBuffer& buffer = context_.read_buffer;
    ssize_t n = ::read(link_.get(), buffer.data(), buffer.size());
    if (n > 0) {
      session_.send(make_block(std::string(buffer.data(), static_cast<std::size_t>(n))));
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n < 0) return parent_gone();
    // The parent half-closed the link: it is done with this client. Finish writing to the
    // client, then close; keep the link open for writing, the Q record still goes up it.
    context_.loop.modify(
        link_.get(), context_.loop.interest(link_.get()) & ~static_cast<std::uint32_t>(EPOLLIN));
    session_.finish("closed by server");
  }

  void parent_gone() {
    link_writer_.detach();
    context_.loop.unwatch(link_.get());
    session_.finish("server went away");
  }

  // Records queued for the parent beyond this make the child stop reading its client.
  static constexpr std::size_t kLinkHighWater = 256 * 1024;

  SessionContext& context_;
  Fd link_;
  SocketWriter link_writer_;
  std::string pending_;
  ClientSession session_;
  TokenGate gate_;  // after the session and the link its hooks use
  bool held_ = false;
};

}  // namespace

namespace {

// The fds keep the numbers they had in the parent, which run into the thousands; the loop indexes
// its watches by fd, so a high number would cost this small process a large table.
Fd renumber_low(Fd fd) {
  int low = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  return low < 0 ? std::move(fd) : Fd(low);
}

}  // namespace

int serve_client_in_child(Fd client, Fd link, std::size_t max_line, std::size_t max_queue,
                          StreamFactory make_stream, const ChatAccess& access) {
  client = renumber_low(std::move(client));
  link = renumber_low(std::move(link));
  // Ctrl-C at a terminal signals the whole process group; the parent tells each child when to
  // stop (it half-closes the link), so a child must outlive that SIGINT.
  ::signal(SIGINT, SIG_IGN);
  ignore_sigpipe();
  EventLoop loop;
  SessionContext context(loop, max_line, max_queue);
  context.stream_factory = std::move(make_stream);
  context.handshake_timeout = std::max(context.handshake_timeout, access.auth_timeout);
  ChildRelay relay(context, std::move(client), std::move(link), access);
  loop.run();
  return 0;
}

}  // namespace mux
