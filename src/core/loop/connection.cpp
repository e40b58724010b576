#include "core/loop/connection.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace mux {

ReadBuffer::ReadBuffer(std::size_t size) : bytes_(nullptr, Unmap{size}), size_(size) {
  void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
  bytes_.reset(static_cast<char*>(mapped));
}

void ReadBuffer::Unmap::operator()(char* bytes) const noexcept {
  if (bytes != nullptr) ::munmap(bytes, size);
}
namespace {

// Reads per wakeup while lingering: enough to swallow what a sender still has in flight, bounded
// so a peer that keeps sending cannot hold the loop (the linger deadline ends it anyway).
constexpr int kDiscardReadsPerWakeup = 16;
// Iovecs per writev in send_now(); a longer batch takes more calls.
constexpr std::size_t kDirectIovecs = 64;

std::string socket_error(int fd) {
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0 || error == 0)
    return "closed by peer";
  return fmt::format("connection error: {}", std::generic_category().message(error));
}

}  // namespace

Connection::Connection(ConnectionContext& context, Fd socket, std::unique_ptr<ByteStream> stream,
                       Owner& owner)
    : context_(context), owner_(owner), socket_(std::move(socket)), stream_(std::move(stream)) {
  if (!stream_) {
    stream_ = context_.stream_factory ? context_.stream_factory(socket_.get())
                                      : make_plain_stream(socket_.get());
  }
  open();
}

Connection::Connection(ConnectionContext& context, Fd socket, Plain, Owner& owner)
    : context_(context),
      owner_(owner),
      socket_(std::move(socket)),
      stream_(make_plain_stream(socket_.get())) {
  open();
}

void Connection::open() {
  IoResult opening = stream_->handshake();
  if (opening.ok()) {
    state_ = State::open;
    handshake_done_ = true;
  } else if (opening.blocked()) {
    arm_phase_timer(context_.handshake_timeout, "handshake timed out");
  }
  context_.loop.watch(socket_.get(), state_ == State::open ? EPOLLIN : stream_->wants(),
                      [this](std::uint32_t events) { handle_events(events); });
  if (!opening.ok() && !opening.blocked())
    close_now(fmt::format("handshake failed: {}", opening.describe()));
  // A TLS handshake that finished before this object existed (the client's first line came with
  // its Finished, read ahead into the stream) leaves input epoll will never report: take it once
  // the owner is built.
  else if (opening.ok())
    read_buffered_input_later();
}

Connection::Connection(ConnectionContext& context, Fd socket, Owner& owner)
    : Connection(context, std::move(socket), nullptr, owner) {}

Connection::~Connection() {
  if (self_) *self_ = nullptr;
  context_.loop.cancel_flush(*this);
  context_.loop.cancel_timer(phase_timer_);
  context_.loop.cancel_timer(idle_timer_);
  if (socket_) context_.loop.unwatch(socket_.get());
}

bool Connection::wants_to_read() const noexcept {
  return state_ == State::open && !paused_ && !input_ended_;
}

void Connection::update_interest() {
  if (state_ == State::closed) return;
  std::uint32_t interest = 0;
  if (state_ == State::handshaking) {
    interest = stream_->wants();
  } else {
    if (wants_to_read()) interest |= read_wants_;
    if (state_ == State::lingering) interest |= EPOLLIN;
    interest |= write_wants_;
  }
  context_.loop.modify(socket_.get(), interest);
}

void Connection::handle_events(std::uint32_t events) {
  if (state_ == State::closed) return;
  if (state_ == State::handshaking) return drive_handshake();
  constexpr std::uint32_t kTrouble = EPOLLERR | EPOLLHUP;
  if (write_wants_ != 0 && (events & (write_wants_ | kTrouble))) {
    if (shutdown_pending_) {
      start_shutdown();
    } else if (batch_blocked_) {
      on_batch_writable();
    } else {
      write_now();
    }
    if (state_ == State::closed) return;
  }
  if (state_ == State::lingering) {
    if (events & (EPOLLIN | kTrouble)) discard_input();
    return;
  }
  if (wants_to_read()) {
    if (events & (read_wants_ | kTrouble)) read_input();
    return;
  }
  // Not reading (paused, draining, input ended) yet the socket reports an error or a hang-up:
  // level-triggered, it would fire forever. Nothing more can be written or read on it.
  if (events & kTrouble) {
    read_last_words();
    close_now(socket_error(socket_.get()));
  }
}

void Connection::drive_handshake() {
  IoResult result = stream_->handshake();
  if (result.blocked()) return update_interest();
  if (!result.ok()) return close_now(fmt::format("handshake failed: {}", result.describe()));
  state_ = State::open;
  handshake_done_ = true;
  context_.loop.cancel_timer(std::exchange(phase_timer_, 0));
  // Closed during the handshake with output queued: that output is all that is left to do.
  if (close_after_handshake_) return close_gracefully();
  update_interest();
  write_now();  // what the owner sent meanwhile
  if (state_ == State::closed) return;
  owner_.on_ready();
  read_buffered_input_later();
}

void Connection::read_buffered_input_later() {
  if (!wants_to_read() || !stream_->has_buffered_input()) return;
  defer_while_alive([](Connection& connection) {
    if (connection.wants_to_read()) connection.read_input();
  });
}

void Connection::read_input() {
  ReadBuffer& buffer = context_.read_buffer;
  int reads = 0;
  for (;;) {
    IoResult result = stream_->read(buffer.data(), buffer.size());
    if (result.ok()) {
      if (idle_timeout_.count() > 0) last_input_ = EventLoop::Clock::now();
      owner_.on_data(std::string_view(buffer.data(), result.bytes));
      if (!wants_to_read()) return;  // the owner paused or closed
      // Input the stream decrypted ahead is invisible to epoll: take it now.
      if (stream_->has_buffered_input()) continue;
      // A short read drained the socket; another would only return EAGAIN.
      if (++reads >= context_.reads_per_wakeup || result.bytes < buffer.size()) return;
      continue;
    }
    if (result.blocked()) {
      std::uint32_t wants = stream_->wants();
      if (wants != read_wants_) {
        read_wants_ = wants;
        update_interest();
      }
      return;
    }
    if (result.status == IoResult::Status::end_of_stream) {
      input_ended_ = true;
      update_interest();
      owner_.on_end_of_input();
      return;
    }
    failure_ = std::make_unique<IoResult>(result);
    return close_now(fmt::format("connection error: {}", result.describe()));
  }
}

void Connection::discard_input() {
  ReadBuffer& buffer = context_.read_buffer;
  for (int i = 0; i < kDiscardReadsPerWakeup; ++i) {
    IoResult result = stream_->read(buffer.data(), buffer.size());
    if (result.ok()) continue;
    if (result.blocked()) return;
    // The peer's EOF (or its reset): everything we sent has been taken.
    return close_now({});
  }
}

void Connection::send(Block block) {
  if (state_ == State::closed || state_ == State::lingering || shutdown_pending_ ||
      shutdown_requested_ || output_shut_ || write_failed_)
    return;
  queue_.push(std::move(block));
  if (high_water_ != 0 && queue_.bytes() > high_water_) {
    // Over the mark counts only what the kernel would not take: write now before judging.
    write_now();
    if (state_ != State::closed && queue_.bytes() > high_water_)
      owner_.on_high_water(queue_.bytes());
    return;
  }
  // Never written here, even from a batch's last event: one handler may send to the same
  // connection several times (a broadcast, then a notice; several joins from one accept
  // event), and each write would be a syscall and a TCP segment of its own. The batch's end
  // writes everything this connection got in one writev.
  schedule_flush();
}

void Connection::schedule_flush() {
  // While a write is blocked the writable event flushes; before the handshake nothing can go.
  if (write_wants_ != 0 || state_ == State::handshaking) return;
  context_.loop.flush_at_batch_end(*this);
}

void Connection::flush() {
  write_now();
}

void Connection::write_now() {
  // Whatever is queued goes now: nothing is left for the batch's end to write.
  context_.loop.cancel_flush(*this);
  if (state_ != State::open && state_ != State::draining) return;
  if (shutdown_pending_ || write_failed_) return;
  IoResult failure;
  switch (queue_.write_to(*stream_, failure)) {
    case OutputQueue::Status::drained:
      // A blocked batch keeps waiting for the socket: the owner writes next.
      if (write_wants_ != 0 && !batch_blocked_) {
        write_wants_ = 0;
        update_interest();
        if (state_ == State::open && !shutdown_requested_) owner_.on_writable();
        if (state_ == State::closed) return;
        // The owner queued more (and may have asked for the half-close): that goes first, and
        // the shutdown after it, from the write that drains it.
        if (!queue_.empty() || batch_blocked_ || write_wants_ != 0) return;
      }
      if (output_shut_) {
        if (state_ == State::draining) start_lingering();
        return;
      }
      if (state_ == State::draining || shutdown_requested_) start_shutdown();
      return;
    case OutputQueue::Status::blocked:
      write_wants_ = stream_->wants();
      update_interest();
      return;
    case OutputQueue::Status::failed:
      return fail_write(std::move(failure));
  }
}

void Connection::send_now(std::span<const Block* const> blocks) {
  if (state_ != State::open || write_wants_ != 0 || !queue_.empty() || shutdown_requested_ ||
      output_shut_ || write_failed_) {
    for (const Block* block : blocks)
      send(*block);
    return;
  }
  std::size_t done = 0;     // blocks written whole
  std::size_t partial = 0;  // bytes of blocks[done] written
  IoResult result;
  while (done < blocks.size()) {
    std::array<iovec, kDirectIovecs> iov{};
    std::size_t count = 0;
    std::size_t wanted = 0;
    for (std::size_t i = done; i < blocks.size() && count < iov.size(); ++i, ++count) {
      const std::string& bytes = **blocks[i];
      std::size_t skip = i == done ? partial : 0;
      // iovec wants a mutable pointer; a write only reads through it.
      iov[count] = {const_cast<char*>(bytes.data() + skip), bytes.size() - skip};
      wanted += bytes.size() - skip;
    }
    result = stream_->writev(iov.data(), static_cast<int>(count));
    if (result.blocked()) break;
    if (!result.ok()) return fail_write(std::move(result));
    for (std::size_t left = result.bytes; left > 0;) {
      std::size_t rest = (*blocks[done])->size() - partial;
      if (left < rest) {
        partial += left;
        break;
      }
      left -= rest;
      partial = 0;
      ++done;
    }
    if (result.bytes < wanted) break;  // the socket is full for now
  }
  if (done == blocks.size()) return;
  // The socket is full: the rest waits in the queue for the writable event.
  if (partial > 0) {
    queue_.push(std::string_view(**blocks[done]).substr(partial));
    ++done;
  }
  for (std::size_t i = done; i < blocks.size(); ++i)
    queue_.push(*blocks[i]);
  write_wants_ = result.blocked() ? stream_->wants() : static_cast<std::uint32_t>(EPOLLOUT);
  update_interest();
  if (high_water_ != 0 && queue_.bytes() > high_water_) owner_.on_high_water(queue_.bytes());
}

void Connection::fail_write(IoResult failure) {
  failure_ = std::make_unique<IoResult>(std::move(failure));
  queue_.clear();
  // Whatever the owner does while hearing the peer out, nothing more is written.
  write_failed_ = true;
  write_wants_ = 0;
  shutdown_pending_ = false;
  if (!read_last_words_) return close_now(fmt::format("write failed: {}", failure_->describe()));
  // After the batch: a write never calls the owner back with input (a fan-out may be writing
  // many connections in a row, and the input may make it send more).
  update_interest();
  defer_while_alive([](Connection& connection) {
    connection.read_last_words();
    connection.close_now(fmt::format("write failed: {}", connection.failure_->describe()));
  });
}

void Connection::read_last_words() {
  if (!read_last_words_ || state_ != State::open || input_ended_) return;
  ReadBuffer& buffer = context_.read_buffer;
  // Bounded: a peer still sending must not hold the loop (the socket buffer is small anyway).
  for (int i = 0; i < kDiscardReadsPerWakeup && state_ == State::open; ++i) {
    IoResult result = stream_->read(buffer.data(), buffer.size());
    if (!result.ok()) return;  // nothing more, the end, or the failure itself
    owner_.on_data(std::string_view(buffer.data(), result.bytes));
  }
}

IoResult Connection::send_batch(std::span<const iovec> chunks) {
  if (state_ == State::handshaking) return IoResult::blocked_on();  // on_ready() tells when
  // Closed by a failure: that failure is the reason this write cannot go.
  if ((state_ == State::closed || write_failed_) && failure_ &&
      failure_->status == IoResult::Status::failed)
    return *failure_;
  if (state_ != State::open || shutdown_requested_ || output_shut_)
    return IoResult::failure(EPIPE, "the connection is closing");
  // (A batch that blocked before is simply tried again: the stream says if it still would.)
  if (!queue_.empty()) {
    batch_blocked_ = true;
    return IoResult::blocked_on();
  }
  std::size_t total = 0;
  for (const iovec& chunk : chunks)
    total += chunk.iov_len;
  IoResult result = stream_->writev(chunks.data(), static_cast<int>(chunks.size()));
  if (result.ok() && result.bytes == total) return result;
  if (result.ok() || result.blocked()) {
    // A short count means the socket is full, whatever the stream last waited for.
    batch_blocked_ = true;
    write_wants_ = result.blocked() ? stream_->wants() : static_cast<std::uint32_t>(EPOLLOUT);
    update_interest();
  }
  return result;
}

void Connection::on_batch_writable() {
  if (!queue_.empty()) {
    write_now();  // queued output goes first; the batch waits while it is blocked
    if (state_ == State::closed || !queue_.empty()) return;
  }
  batch_blocked_ = false;
  owner_.on_writable();
  if (state_ == State::closed) return;
  // The owner had nothing more to write, or all of it went: stop asking for writability.
  if (!batch_blocked_ && !shutdown_pending_ && queue_.empty() && write_wants_ != 0) {
    write_wants_ = 0;
    update_interest();
  }
}

void Connection::shutdown_output() {
  if (state_ != State::open && state_ != State::handshaking) return;
  if (shutdown_requested_ || output_shut_ || write_failed_) return;
  shutdown_requested_ = true;
  write_now();  // drained at once: shuts down now (after the handshake otherwise)
}

void Connection::read_pending() {
  if (wants_to_read()) read_input();
}

void Connection::forget() {
  if (state_ == State::closed) return;
  state_ = State::closed;
  context_.loop.cancel_flush(*this);
  context_.loop.cancel_timer(std::exchange(phase_timer_, 0));
  context_.loop.cancel_timer(std::exchange(idle_timer_, 0));
  queue_.clear();
  // Unwatched before the close: the child's copy keeps the socket open, so epoll would otherwise
  // keep reporting it under a number this process no longer owns.
  context_.loop.unwatch(socket_.get());
  stream_.reset();  // a TLS stream frees its session without a word (SSL_free sends nothing)
  socket_.reset();
}

Connection::Parts Connection::take_in_child() noexcept {
  state_ = State::closed;
  phase_timer_ = 0;
  idle_timer_ = 0;
  return Parts{std::move(socket_), std::move(stream_)};
}

std::size_t Connection::unacknowledged() const noexcept {
  int in_kernel = 0;
  if (!socket_ || ::ioctl(socket_.get(), SIOCOUTQ, &in_kernel) < 0 || in_kernel < 0) in_kernel = 0;
  return queue_.bytes() + static_cast<std::size_t>(in_kernel);
}

void Connection::pause_reading() {
  if (paused_) return;
  paused_ = true;
  update_interest();
}

void Connection::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  update_interest();
  if (wants_to_read() && stream_->has_buffered_input())
    defer_while_alive([](Connection& connection) {
      if (connection.wants_to_read()) connection.read_input();
    });
}

void Connection::close_gracefully() {
  if (state_ == State::handshaking) {
    if (queue_.empty()) return close_now({});
    close_after_handshake_ = true;  // the handshake deadline still bounds it
    return;
  }
  if (state_ != State::open) return;
  state_ = State::draining;
  context_.loop.cancel_timer(std::exchange(idle_timer_, 0));
  arm_phase_timer(context_.drain_timeout, "timed out writing to it");
  update_interest();  // stops reading
  write_now();        // drained at once: half-closes
}

void Connection::start_shutdown() {
  IoResult result = stream_->shutdown_write();
  if (result.blocked()) {
    shutdown_pending_ = true;
    write_wants_ = stream_->wants();
    return update_interest();
  }
  shutdown_pending_ = false;
  write_wants_ = 0;
  if (!result.ok()) return close_now(fmt::format("connection error: {}", result.describe()));
  output_shut_ = true;
  if (state_ == State::draining) return start_lingering();
  update_interest();  // a half-close that keeps reading: no more waiting to write
}

void Connection::start_lingering() {
  if (input_ended_) return close_now({});  // the peer is done sending: nothing to wait for
  state_ = State::lingering;
  arm_phase_timer(context_.linger_timeout, "");
  update_interest();
}

void Connection::close_now(std::string reason) {
  if (state_ == State::closed) return;
  state_ = State::closed;
  context_.loop.cancel_timer(std::exchange(phase_timer_, 0));
  context_.loop.cancel_timer(std::exchange(idle_timer_, 0));
  context_.loop.cancel_flush(*this);
  queue_.clear();
  context_.loop.unwatch(socket_.get());
  stream_.reset();
  socket_.reset();
  defer_while_alive([reason = std::move(reason)](Connection& connection) {
    connection.owner_.on_closed(reason);
  });
}

void Connection::abort(std::string reason) {
  if (state_ == State::closed) return;
  // With a zero linger, close() sends a reset and drops what the kernel still holds.
  linger abortive{1, 0};
  (void)::setsockopt(socket_.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
  close_now(std::move(reason));
}

void Connection::arm_phase_timer(std::chrono::milliseconds delay, const char* reason) {
  context_.loop.cancel_timer(phase_timer_);
  phase_timer_ = context_.loop.add_timer(delay, [this, reason] {
    phase_timer_ = 0;
    close_now(reason);
  });
}

void Connection::set_idle_timeout(std::chrono::milliseconds timeout) {
  context_.loop.cancel_timer(std::exchange(idle_timer_, 0));
  idle_timeout_ = timeout;
  last_input_ = EventLoop::Clock::now();
  if (timeout.count() > 0 && !closing()) arm_idle_timer(timeout);
}

void Connection::arm_idle_timer(std::chrono::milliseconds delay) {
  idle_timer_ = context_.loop.add_timer(delay, [this] {
    idle_timer_ = 0;
    on_idle_timer();
  });
}

// The timer is not moved on every read (that would cost a timer-queue update per read): when it
// fires early because input arrived meanwhile, it is simply armed again for the rest.
void Connection::on_idle_timer() {
  if (closing() || idle_timeout_.count() <= 0) return;
  auto quiet =
      std::chrono::duration_cast<std::chrono::milliseconds>(EventLoop::Clock::now() - last_input_);
  // Paused reading is our choice, not the peer's idleness.
  if (paused_) {
    last_input_ = EventLoop::Clock::now();
    return arm_idle_timer(idle_timeout_);
  }
  if (quiet < idle_timeout_) return arm_idle_timer(idle_timeout_ - quiet);
  last_input_ = EventLoop::Clock::now();
  arm_idle_timer(idle_timeout_);
  owner_.on_idle();
}

const IoResult& Connection::failure() const noexcept {
  static const IoResult none;  // immutable: "no failure" for every connection without one
  return failure_ ? *failure_ : none;
}

void Connection::defer_while_alive(std::function<void(Connection&)> callback) {
  if (!self_) self_ = std::make_shared<Connection*>(this);
  context_.loop.defer([token = self_, callback = std::move(callback)] {
    if (Connection* connection = *token) callback(*connection);
  });
}

}  // namespace mux
