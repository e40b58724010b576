// ClientSession: one chat client, as served by a chat-server process — in single mode one per
// client in the server's loop, in fork mode the single one in each child. Owns the client's
// Connection (socket, stream, output queue bounded by --max-queue through the high-water mark,
// graceful close), its LineFramer (with the quiet-time flush of an unterminated line and the
// bound on a half-sent line's age) and the sanitizing of what arrives. It knows nothing of rooms
// or names: it reports sanitized lines and its end to a Listener, which owns the session and
// destroys it (through EventLoop::retire) once told on_closed().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/line_framer.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/output_queue.hpp"
#include "core/loop/timed_pause.hpp"

namespace mux {

// What every session of one loop shares, so an idle session costs only its own small state:
// the loop, the buffer each read lands in (ConnectionContext), the limits and the buffer lines
// are sanitized into.
struct SessionContext : ConnectionContext {
  SessionContext(EventLoop& event_loop, std::size_t max_line, std::size_t max_queue)
      : ConnectionContext(event_loop, kReadBufferBytes), max_line(max_line), max_queue(max_queue) {
    drain_timeout = kCloseTimeout;
    linger_timeout = kLingerTime;
  }

  static constexpr std::size_t kReadBufferBytes = 64 * 1024;
  // An unterminated line is delivered once the sender has been quiet this long...
  static constexpr std::chrono::milliseconds kQuietTime{100};
  // ...or once its first byte is this old, however steadily the rest drips in: a half-sent line
  // is bounded in time as well as in size (--max-line).
  static constexpr std::chrono::milliseconds kLineTime{5000};
  // Closing (after /quit, at shutdown, when full) waits at most this long for the output to be
  // written, then at most kLingerTime for the peer to close its side.
  static constexpr std::chrono::milliseconds kCloseTimeout{2000};
  static constexpr std::chrono::milliseconds kLingerTime{500};

  std::size_t max_line;
  std::size_t max_queue;
  std::string sanitized;
};

class ClientSession final : private Connection::Owner {
 public:
  class Listener {
   public:
    // A sanitized line (no '\n', no control bytes but TAB); `cut` when over --max-line. The view
    // is only valid during the call.
    virtual void on_line(std::string_view text, bool cut) = 0;
    // The lines of one read have all been reported.
    virtual void on_input_done() = 0;
    // The client is leaving (called once, from a deferred callback). When it only closed its
    // sending side, the session still writes what it is sent until finish() is called.
    virtual void on_leave(std::string_view reason, bool too_slow) = 0;
    // The socket is done with (called once, after on_leave): the listener may retire the session.
    virtual void on_closed() = 0;
    // The TLS handshake finished (never called for plain TCP, which is ready at once).
    virtual void on_ready() {}

   protected:
    ~Listener() = default;
  };

  ClientSession(SessionContext& context, Fd socket, Listener& listener);
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;
  ~ClientSession();

  // Queues bytes for the client; a client with more than --max-queue still unwritten after a
  // write attempt leaves as too slow.
  void send(const Block& block);
  // Stops reading, writes what is queued, closes (bounded by kCloseTimeout). `reason` is what
  // on_leave reports.
  void finish(std::string_view reason);

  // Flow control: while paused the socket is not read, so the kernel's buffers fill and TCP
  // slows the client down. A timed pause (the client is over its rate) ends by itself; a call
  // while paused extends it to whichever end is later. hold_reading()/release_reading() pause
  // until released (fork mode: the link to the parent is full). An unterminated line is not
  // flushed as "quiet" while paused: the client is not quiet, it is not being read.
  void pause_reading_for(std::chrono::milliseconds pause);
  void hold_reading();
  void release_reading();

  [[nodiscard]] int fd() const noexcept { return connection_.fd(); }
  // False until the TLS handshake is done (plain TCP: true from the start).
  [[nodiscard]] bool ready() const noexcept { return connection_.ready(); }

 private:
  // Connection::Owner
  void on_data(std::string_view bytes) override;
  void on_end_of_input() override;
  void on_closed(std::string_view reason) override;
  void on_high_water(std::size_t queued) override;
  void on_ready() override { listener_.on_ready(); }

  void deliver_line(std::string_view raw, bool cut);
  void flush_quiet_line();
  void rearm_quiet_timer(bool mid_line);
  void leave(std::string reason, bool too_slow);
  [[nodiscard]] bool reading_paused() const noexcept { return held_ || pause_.active(); }
  void update_reading();

  SessionContext& context_;
  Listener& listener_;
  LineFramer framer_;
  Connection connection_;
  EventLoop::TimerId quiet_timer_ = 0;
  // When the pending partial line's first byte arrived (zero: no partial line).
  EventLoop::Clock::time_point partial_since_{};
  TimedPause pause_;              // the client is over its rate: not read until it ends
  bool held_ = false;             // hold_reading() without release_reading() yet
  bool quiet_flush_due_ = false;  // the quiet time passed while reading was paused
  bool reading_lines_ = true;     // false once finishing: lines after /quit are not read
  bool left_ = false;             // on_leave has been scheduled
};

}  // namespace mux
