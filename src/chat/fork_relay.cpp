#include "chat/fork_relay.hpp"

#include <fcntl.h>

#include <algorithm>
#include <csignal>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "chat/token_gate.hpp"
#include "core/loop/net.hpp"

namespace mux {
namespace {

// Sanitizing can turn one input byte into up to three (U+FFFD); a record also has its tag.
std::size_t max_record_bytes(std::size_t max_line) {
  return 3 * max_line + 64;
}

constexpr std::uint32_t kSlotBits = 64;

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
  // Writing never delivers or closes synchronously (a link whose write fails reads the child's
  // last records and reports after the batch), so the groups stay as they are during the walk.
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
      pid_(pid),
      ticket_(std::move(ticket)),
      room_(room),
      owner_(owner),
      framer_(max_record_bytes(context.max_line)),
      // Plain, whatever the server's stream factory says: TLS runs in the child.
      link_(context, std::move(link), Connection::plain, *this),
      slot_(fan_out.attach(*this)),
      pause_(context.loop,
             [this] {
               if (!closed_) link_.resume_reading();
             }),
      origin_(std::move(origin)),
      logger_(logger) {
  // A child that exited may leave its last records (its Q) unread when a write to it fails:
  // they are read first, so the room hears why it left.
  link_.set_read_last_words(true);
  // Shed while its child still waits for the handshake or the token: the child has nothing to
  // finish, and a graceful close would keep its process (and its pid slot) through the linger.
  ticket_.on_shed([this] {
    ::kill(pid_, SIGKILL);
    close_after_output();
  });
}

ChildLink::~ChildLink() {
  if (!closed_) fan_out_.detach(slot_);
}

// Every child inherits the parent's memory as it was at its fork, and each page the parent writes
// afterwards stays behind as a copy held by the older children. Queueing a broadcast line writes
// to every member's queue, so a join announced to N children left ~N/2 pages behind in each fork:
// fork-mode memory grew with the square of the clients. An idle link's deliveries therefore go to
// the shared fan-out, which touches no per-member memory and writes each link once per batch.
void ChildLink::deliver(const Block& block) {
  if (closed_) return;
  // Bytes already queued must go first: while there are any, the link's queue takes the rest too.
  if (link_.queued() == 0) return fan_out_.add(slot_, block);
  link_.send(block);
  enforce_queue_limit();
}

void ChildLink::enforce_queue_limit() {
  // The child enforces --max-queue on its client itself and reads its link eagerly, so this is
  // only a safety net against a stuck child. It is kept well above --max-queue: a child that is
  // merely short of CPU (a burst, a sanitizer build) must get the chance to find its slow client
  // and report it ("too slow: N bytes unsent") rather than be killed for lagging.
  const std::size_t stuck_limit = 4 * context_.max_queue + (std::size_t{1} << 20);
  if (link_.queued() <= stuck_limit) return;
  link_.flush();
  if (closed_ || link_.queued() <= stuck_limit) return;
  // Far behind even so: the child cannot be served any more.
  ::kill(pid_, SIGKILL);
  context_.loop.defer([this] {
    room_.leave(*this, "too slow: its process stopped reading", true);
    close("too slow");
  });
}

void ChildLink::write_batch(std::span<const Block* const> blocks) {
  if (closed_) return;
  link_.send_now(blocks);
  if (link_.queued() != 0) enforce_queue_limit();
}

void ChildLink::close_after_output() {
  if (closing_ || closed_) return;
  closing_ = true;
  // This link's last blocks may still wait in the fan-out, whose flush was deferred earlier in
  // this batch and so runs before this (the link outlives the batch: it is retired, not
  // destroyed). The half-close keeps reading: the child's Q record still comes up.
  if (fan_out_.pending()) {
    return context_.loop.defer([this] {
      if (!closed_) link_.shutdown_output();
    });
  }
  link_.shutdown_output();
}

void ChildLink::pause_input(std::chrono::milliseconds pause) {
  if (closed_) return;
  if (pause_.extend(pause)) link_.pause_reading();
}

void ChildLink::on_data(std::string_view bytes) {
  if (closed_) return;
  framer_.feed(bytes, [this](std::string_view record, bool) { handle_record(record); });
  room_.end_of_input();
}

// The child closes the link after sending its Q record; a link that ends without one means the
// child died.
void ChildLink::on_end_of_input() {
  close("its process ended");
}

void ChildLink::on_closed(std::string_view /*reason*/) {
  if (closed_) return;
  const IoResult& failure = link_.failure();
  close(failure.status == IoResult::Status::failed
            ? fmt::format("lost its process: {}", failure.describe())
            : std::string("its process ended"));
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
  pause_.cancel();
  fan_out_.detach(slot_);
  link_.close_now({});
  room_.leave(*this, reason, false);
  room_.gone(*this);
  owner_.release(*this);
}

namespace {

// The child's side: one ClientSession whose lines go up the link and whose output comes down it.
class ChildRelay final : private ClientSession::Listener, private TokenGate::Hooks {
 public:
  ChildRelay(SessionContext& context, Fd client, Fd link, const ChatAccess& access)
      : context_(context),
        link_events_(*this),
        // Plain: the socketpair to the parent, whatever the client's stream is.
        link_(context, std::move(link), Connection::plain, link_events_),
        peer_(peer_address(client.get())),
        session_(context, std::move(client), *this),
        // The child has no log of its own: the reason goes up in the Q record, and the parent
        // logs it with the client's address.
        gate_(context.loop, access, peer_, *this) {
    // Records queued for the parent beyond this make the child stop reading its client.
    link_.set_high_water_mark(kLinkHighWater);
    if (session_.ready()) gate_.handshake_done();
  }
  ChildRelay(const ChildRelay&) = delete;
  ChildRelay& operator=(const ChildRelay&) = delete;
  ~ChildRelay() = default;

 private:
  // The link's events: what the parent sends goes to the client verbatim.
  class LinkEvents final : public Connection::Owner {
   public:
    explicit LinkEvents(ChildRelay& relay) : relay_(relay) {}
    void on_data(std::string_view bytes) override {
      relay_.session_.send(make_block(std::string(bytes)));
    }
    // The parent half-closed the link: it is done with this client. Finish writing to the
    // client, then close; the link stays open for writing, the Q record still goes up it.
    void on_end_of_input() override { relay_.session_.finish("closed by server"); }
    void on_closed(std::string_view /*reason*/) override { relay_.parent_gone(); }
    // The parent reads the link more slowly while this client is over its rate: stop reading
    // the client too, so the backlog stays in the client's TCP buffers, not in this process.
    void on_high_water(std::size_t /*queued*/) override { relay_.hold(); }
    // What was queued is all written.
    void on_writable() override { relay_.link_drained(); }

   private:
    ChildRelay& relay_;
  };

  // TokenGate::Hooks. Through: tells the parent the client may join (see chat/chat_access.hpp).
  void gate_join() override { link_.send(std::string_view("R\n")); }
  void gate_hold_reading() override { session_.hold_reading(); }
  void gate_send(std::string_view text) override { session_.send(make_block(std::string(text))); }
  void gate_finish(std::string_view reason) override { session_.finish(reason); }

  void on_ready() override { gate_.handshake_done(); }

  void on_line(std::string_view text, bool cut) override {
    if (gate_.take_line(text)) return;
    pending_ += cut ? 'C' : 'L';
    pending_ += text;
    pending_ += '\n';
  }
  void on_input_done() override { flush_pending(); }
  void on_leave(std::string_view reason, bool too_slow) override {
    flush_pending();
    link_.send(fmt::format("Q{}{}\n", too_slow ? '1' : '0', reason));
  }
  // The client is gone: once the records (the Q) are down the link, the child is done.
  void on_closed() override {
    context_.loop.add_timer(SessionContext::kCloseTimeout, [this] { context_.loop.stop(); });
    stop_when_drained_ = true;
    link_.flush();
    if (link_.queued() == 0 || link_.closed()) context_.loop.stop();
  }

  void flush_pending() {
    if (!pending_.empty()) link_.send(make_block(std::exchange(pending_, {})));
  }

  void hold() {
    if (held_) return;
    held_ = true;
    session_.hold_reading();
  }

  void link_drained() {
    if (held_) {
      held_ = false;
      session_.release_reading();
    }
    if (stop_when_drained_) context_.loop.stop();
  }

  void parent_gone() {
    session_.finish("server went away");
    if (stop_when_drained_) context_.loop.stop();
  }

  static constexpr std::size_t kLinkHighWater = 256 * 1024;

  SessionContext& context_;
  LinkEvents link_events_;
  Connection link_;
  std::string pending_;
  std::string peer_;  // the client's address, named by the gate
  ClientSession session_;
  TokenGate gate_;  // after the session and the link its hooks use
  bool held_ = false;
  bool stop_when_drained_ = false;  // the client is gone: stop once the link is written
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
