// ClientSession: one chat client's socket, as served by a chat-server process — in single mode
// one per client in the server's loop, in fork mode the single one in each child. Owns the
// socket, its LineFramer (with the ~100 ms quiet-time flush of an unterminated line), the
// sanitizing of what arrives and its output queue (a SocketWriter bounded by --max-queue). It
// knows nothing of rooms or names: it reports sanitized lines and its end to a Listener, which
// owns the session and destroys it (through EventLoop::retire) once told on_closed().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.hpp"
#include "core/fd.hpp"
#include "core/line_framer.hpp"
#include "core/output_queue.hpp"

namespace mux {

// The buffer every read of one loop lands in. Not zero-filled: only the pages reads actually
// touch become resident, which keeps a fork-mode child (that mostly reads short lines) small.
class ReadBuffer {
 public:
  explicit ReadBuffer(std::size_t size)
      : bytes_(std::make_unique_for_overwrite<char[]>(size)), size_(size) {}
  [[nodiscard]] char* data() noexcept { return bytes_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<char[]> bytes_;
  std::size_t size_;
};

// What every session of one loop shares, so an idle session costs only its own small state:
// the limits, the buffer each read lands in and the buffer lines are sanitized into.
struct SessionContext {
  SessionContext(EventLoop& loop, std::size_t max_line, std::size_t max_queue)
      : loop(loop), max_line(max_line), max_queue(max_queue), read_buffer(kReadBufferBytes) {}

  static constexpr std::size_t kReadBufferBytes = 64 * 1024;
  // An unterminated line is delivered once the sender has been quiet this long.
  static constexpr std::chrono::milliseconds kQuietTime{100};
  // Closing (after /quit, at shutdown, when full) waits at most this long for the output to be
  // written, then at most kLingerTime for the peer to close its side.
  static constexpr std::chrono::milliseconds kCloseTimeout{2000};
  static constexpr std::chrono::milliseconds kLingerTime{500};

  EventLoop& loop;
  std::size_t max_line;
  std::size_t max_queue;
  ReadBuffer read_buffer;
  std::string sanitized;
};

class ClientSession {
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

  [[nodiscard]] int fd() const noexcept { return socket_.get(); }

 private:
  enum class State : std::uint8_t { open, half_open, draining, lingering, closed };

  void handle_events(std::uint32_t events);
  void read_input();
  void on_peer_closed();
  void stop_reading();
  void discard_input();
  void deliver_line(std::string_view raw, bool cut);
  void flush_quiet_line();
  void rearm_quiet_timer(bool mid_line);
  void leave(std::string reason, bool too_slow);
  void start_draining();
  void start_lingering();
  void close();

  SessionContext& context_;
  Listener& listener_;
  Fd socket_;
  LineFramer framer_;
  SocketWriter writer_;
  EventLoop::TimerId timer_ = 0;  // the quiet-time flush while open, the close deadline after
  State state_ = State::open;
  bool peer_closed_ = false;  // the client shut down its side: nothing to linger for
  bool left_ = false;         // on_leave has been scheduled
};

}  // namespace mux
