// Connection: the one endpoint of every subcommand, inbound or outbound. Owns the socket (Fd),
// the ByteStream that moves its bytes (plain TCP or TLS), its EventLoop registration, its
// OutputQueue and its timers (handshake / close deadlines and the idle deadline). It reports
// what happens to an Owner (the chat session, the upload session, a client, the Redis link...)
// and offers send (queued, or a batch written in place), flow control (pause/resume reading), a
// hand-over to a forked child, a half-close that keeps reading, graceful close (drain, half-close,
// bounded linger reading and discarding until the peer's EOF, close), immediate close and abortive
// close (RST). Whatever the stream's blocked calls wait for (wants(): a TLS read may need the
// socket writable) and a shutdown that would block are handled here, once, for every owner.
//
// Who calls it: servers create one per accepted socket (with a stream from their StreamFactory,
// so TLS is "a different factory"); clients one per outbound link, from the socket a Connector
// (or connect_within / open_client_link) connected and a plain or TLS client stream. The owner
// keeps it alive and, once told on_closed(), hands it to EventLoop::retire() — never deletes it
// inside a callback.
//
// Memory: an idle connection holds no buffer. Reads land in the ConnectionContext's read buffer,
// shared by every connection of one loop; the output queue is empty (no heap) while idle.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/loop/byte_stream.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/output_queue.hpp"

namespace mux {

// The buffer every read of one loop lands in. Mapped straight from the kernel (mmap), not from
// malloc: only the pages reads actually touch become resident, whatever malloc's tuning
// (MALLOC_PERTURB_ fills every malloc'd block, which made each fork-mode upload child's 1 MiB
// buffer resident before a byte arrived). Keeps a fork-mode child small.
class ReadBuffer {
 public:
  explicit ReadBuffer(std::size_t size);
  [[nodiscard]] char* data() noexcept { return bytes_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  struct Unmap {
    std::size_t size;
    void operator()(char* bytes) const noexcept;
  };
  std::unique_ptr<char[], Unmap> bytes_;
  std::size_t size_;
};

// Makes the stream for a new socket: make_plain_stream, or a TLS server/client stream.
using StreamFactory = std::function<std::unique_ptr<ByteStream>(int fd)>;

// What every connection of one loop shares, so that each one costs only its own small state.
struct ConnectionContext {
  explicit ConnectionContext(EventLoop& event_loop, std::size_t read_buffer_bytes = 64 * 1024)
      : loop(event_loop), read_buffer(read_buffer_bytes) {}

  EventLoop& loop;
  ReadBuffer read_buffer;
  // The stream a connection made without one gets: null means plain TCP. A TLS server sets its
  // factory here and nothing else changes.
  StreamFactory stream_factory;
  // Reads per readiness event: 1 keeps many chatty connections fair; bulk receivers (uploads)
  // take more per wakeup. Input a stream holds decrypted ahead is read regardless.
  int reads_per_wakeup = 1;
  // The opening handshake (TLS) must finish within this, or the connection is closed.
  std::chrono::milliseconds handshake_timeout{10'000};
  // Graceful close: at most this long to write what is queued...
  std::chrono::milliseconds drain_timeout{2'000};
  // ...then at most this long, after our FIN, reading and discarding until the peer's EOF.
  std::chrono::milliseconds linger_timeout{500};
};

class Connection final : private EventLoop::Flushable {
 public:
  class Owner {
   public:
    // Bytes read, valid only during the call (they live in the shared read buffer).
    virtual void on_data(std::string_view bytes) = 0;
    // The peer closed its sending side. Reading stops; sending still works until the owner
    // closes.
    virtual void on_end_of_input() = 0;
    // Called once, from a deferred callback (never inside the owner's own call into the
    // connection), after the socket is closed: the owner may now retire the connection.
    // `reason` is empty after a graceful close that went as planned.
    virtual void on_closed(std::string_view reason) = 0;
    // A handshake that could not finish at once has finished (never called for plain TCP).
    virtual void on_ready() {}
    // More than the high-water mark is still queued after a write attempt. Called inside the
    // owner's send(); the owner usually closes the connection (a reader too slow to keep).
    virtual void on_high_water(std::size_t /*queued*/) {}
    // No input arrived for the idle timeout.
    virtual void on_idle() {}
    // The socket takes output again: a send_batch() that took less than it was given may go on,
    // or what was queued is all written after a write had to wait.
    virtual void on_writable() {}

   protected:
    ~Owner() = default;
  };

  // Takes the socket (non-blocking) and the stream on it; watches it at once. A stream whose
  // handshake completes at once (plain TCP) is ready when the constructor returns. A null
  // stream means the context's stream_factory, or plain TCP when it has none.
  Connection(ConnectionContext& context, Fd socket, std::unique_ptr<ByteStream> stream,
             Owner& owner);
  // The context's stream (stream_factory, or plain TCP).
  Connection(ConnectionContext& context, Fd socket, Owner& owner);
  // Plain whatever the context's stream_factory says: a socketpair to a child process in a loop
  // whose clients speak TLS.
  struct Plain {};
  static constexpr Plain plain{};
  Connection(ConnectionContext& context, Fd socket, Plain, Owner& owner);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Queues bytes; written when the current batch ends (many sends, one writev: the loop's flush
  // list, see EventLoop::flush_at_batch_end) or when the handshake completes. Ignored once
  // closing has passed the drain.
  void send(Block block);
  void send(std::string_view bytes) { send(make_block(std::string(bytes))); }
  // Writes what is queued now instead of at the end of the batch.
  void flush();
  // Writes `chunks` now, in one writev, without copying them into the queue: for bulk senders
  // that keep their own buffers (upload-client's file chunks). Returns what the stream took.
  // When it took less than everything (a full socket), on_writable() says when to go on. While
  // queued output waits (it goes first) or the handshake runs, nothing is written: would_block.
  // A failed write does not close: the owner may still read_pending() the peer's last words.
  IoResult send_batch(std::span<const iovec> chunks);
  // Writes `blocks` now, in as few writevs as they take, and queues only what the socket does not
  // take (on_writable() once that is written). For a fan-out that writes many connections once per
  // batch itself: when everything goes, nothing of this connection is written to, only read (a
  // fork-mode parent's pages are shared with its children, and each page it dirties after a fork
  // stays behind as a copy in them). Queued output goes first: behind it, blocks simply queue.
  void send_now(std::span<const Block* const> blocks);

  // Half-close that keeps reading: writes what is queued, then ends our sending side (FIN, or
  // close_notify then FIN), retried when a TLS shutdown would block; input still reaches
  // on_data() and on_end_of_input(). Later sends are ignored.
  void shutdown_output();
  // Reads what is waiting now instead of at the next readiness event (a sender whose write failed
  // takes the reply the peer sent before closing).
  void read_pending();
  // Fork mode, once a child process carries on with this connection (the fork-mode upload parent
  // hands over a client whose header is complete, its TLS session included):
  // in the parent, forget() stops watching the socket and closes this process's copy without
  // writing a byte (no close_notify, no FIN: the socket stays open in the child, whose TLS session
  // goes on), cancels the timers and drops queued output; no on_closed(). The connection is closed
  // afterwards.
  void forget();
  // In the child, which must not touch the parent's loop (its epoll instance is the parent's):
  // the socket and its stream, moved out without a system call, for a Connection of the child's
  // own loop (whose constructor takes over a finished handshake and any input the stream holds).
  struct Parts {
    Fd socket;
    std::unique_ptr<ByteStream> stream;
  };
  [[nodiscard]] Parts take_in_child() noexcept;

  // Flow control: while paused nothing is read, so the kernel's receive buffer fills and TCP
  // pushes back on the sender.
  void pause_reading();
  void resume_reading();

  // Stops reading, writes what is queued, half-closes, reads and discards until the peer's EOF
  // (so unread input cannot turn our close into a reset that destroys the last reply), closes.
  // Each phase is bounded by the context's drain / linger timeouts. During the handshake: closes
  // at once when nothing is queued; otherwise the handshake may still finish (within its
  // deadline) so that what is queued goes out inside it (a TLS client told ERR timeout).
  void close_gracefully();
  // Closes now; queued output is dropped. `reason` goes to on_closed().
  void close_now(std::string reason);
  // Closes now with a reset (SO_LINGER 0) instead of a FIN, so the peer cannot take what it got
  // for a complete stream (upload-client's stream of unknown length cut short).
  void abort(std::string reason);

  // A write that fails, or a hang-up met while not reading (paused), first hands on_data() what
  // the peer sent before it went, then closes: a peer process that exits right after its last
  // message (the fork-mode child's leave record) is heard out, not cut off by our own write.
  // After a failed write that happens once the batch is done, never inside the write's caller.
  void set_read_last_words(bool on) noexcept { read_last_words_ = on; }
  // on_high_water() when more than `bytes` are still queued after a write attempt (0: never).
  void set_high_water_mark(std::size_t bytes) noexcept { high_water_ = bytes; }
  // on_idle() after `timeout` without input (zero: never). Restarts the clock.
  void set_idle_timeout(std::chrono::milliseconds timeout);

  [[nodiscard]] int fd() const noexcept { return socket_.get(); }
  [[nodiscard]] std::size_t queued() const noexcept { return queue_.bytes(); }
  // Bytes sent but not yet acknowledged by the peer's host: the queue plus the kernel's send
  // queue (SIOCOUTQ). A client waiting for its last lines to be taken watches this go down.
  [[nodiscard]] std::size_t unacknowledged() const noexcept;
  // The opening handshake completed (plain TCP: at once). False for good once it failed, even
  // though the connection is then closed rather than handshaking.
  [[nodiscard]] bool ready() const noexcept { return handshake_done_; }
  [[nodiscard]] bool closed() const noexcept { return state_ == State::closed; }
  [[nodiscard]] bool closing() const noexcept {
    return state_ == State::draining || state_ == State::lingering || state_ == State::closed;
  }
  [[nodiscard]] bool reading_paused() const noexcept { return paused_; }
  [[nodiscard]] bool input_ended() const noexcept { return input_ended_; }
  // Our sending side has been shut down (shutdown_output(), or a graceful close past its drain).
  [[nodiscard]] bool output_shut_down() const noexcept { return output_shut_; }
  [[nodiscard]] const ByteStream* stream() const noexcept { return stream_.get(); }
  // The read or write failure that closed the connection (status done when none did): clients
  // word their own message from it ("connection to HOST:PORT: Connection reset by peer").
  [[nodiscard]] const IoResult& failure() const noexcept;

 private:
  enum class State : std::uint8_t { handshaking, open, draining, lingering, closed };

  // The constructors' common part: the handshake's first step and the watch.
  void open();
  void handle_events(std::uint32_t events);
  void drive_handshake();
  // Reads, on the next loop turn, input the stream already holds (decrypted or read ahead):
  // epoll reports only what is still in the socket.
  void read_buffered_input_later();
  void read_input();
  void discard_input();
  void schedule_flush();
  void on_batch_end() override { write_now(); }
  void write_now();
  // A write failed: nothing more can be written; the peer's last words (if asked), then closed.
  void fail_write(IoResult failure);
  void read_last_words();
  void on_batch_writable();
  void start_shutdown();
  void start_lingering();
  void update_interest();
  [[nodiscard]] bool wants_to_read() const noexcept;
  void arm_phase_timer(std::chrono::milliseconds delay, const char* reason);
  void arm_idle_timer(std::chrono::milliseconds delay);
  void on_idle_timer();
  // Runs `callback` after the batch unless this connection has been destroyed by then.
  void defer_while_alive(std::function<void(Connection&)> callback);

  ConnectionContext& context_;
  Owner& owner_;
  Fd socket_;
  std::unique_ptr<ByteStream> stream_;
  OutputQueue queue_;
  // Both made only when needed: most connections of a big room sit idle, and these were 72 of
  // each one's bytes plus a heap block (issue 25).
  std::unique_ptr<IoResult> failure_;  // the I/O error that ended it, once there is one
  // Shared with deferred callbacks so a connection destroyed before the batch ends is not touched.
  std::shared_ptr<Connection*> self_;
  std::size_t high_water_ = 0;
  EventLoop::TimerId phase_timer_ = 0;  // handshake, drain or linger deadline
  EventLoop::TimerId idle_timer_ = 0;
  std::chrono::milliseconds idle_timeout_{0};
  EventLoop::Clock::time_point last_input_{};
  std::uint32_t read_wants_ = EPOLLIN;  // what the stream's last blocked read waits for
  std::uint32_t write_wants_ = 0;       // what the last blocked write waits for; 0 when none
  State state_ = State::handshaking;
  bool paused_ = false;
  bool input_ended_ = false;
  bool shutdown_pending_ = false;  // shutdown_write() would block (TLS close_notify)
  bool handshake_done_ = false;
  bool shutdown_requested_ = false;  // shutdown_output(): shut down once the queue is written
  bool output_shut_ = false;         // shutdown_write() is done
  bool batch_blocked_ = false;       // send_batch() took less: on_writable() when it can go on
  bool read_last_words_ = false;
  bool write_failed_ = false;  // set by fail_write(): nothing more is written while closing
  bool close_after_handshake_ = false;  // close_gracefully() with output queued, mid-handshake
};

}  // namespace mux
