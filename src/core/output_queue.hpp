// OutputQueue: the bytes a non-blocking fd still owes its peer. write_to() hands the kernel as
// much as it takes in one writev and keeps the rest. Data is held as shared immutable blocks, so
// one formatted broadcast line queued for a thousand receivers is one allocation, not a thousand.
// SocketWriter (below) ties a queue to an fd watched by an EventLoop: it keeps EPOLLOUT armed only
// while bytes remain and coalesces everything queued during one batch into one writev.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/event_loop.hpp"

struct iovec;

namespace mux {

class ByteStream;
struct IoResult;

using Block = std::shared_ptr<const std::string>;
inline Block make_block(std::string bytes) {
  return std::make_shared<const std::string>(std::move(bytes));
}

class OutputQueue {
 public:
  enum class Status {
    drained,  // everything queued is written
    blocked,  // the kernel took what it could (EAGAIN); bytes remain
    failed,   // a write error; `error` holds errno
  };

  void push(Block block);
  void push(std::string_view bytes) { push(make_block(std::string(bytes))); }

  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] bool empty() const noexcept { return bytes_ == 0; }
  void clear() noexcept;

  // Writes with writev until drained or the kernel refuses more.
  Status write_to(int fd, int& error);
  // The same through a ByteStream (TLS or plain); `failure` is set when it returns failed.
  Status write_to(ByteStream& stream, IoResult& failure);

 private:
  void consume(std::size_t written);
  // Fills `iov` with the pending bytes, at most `max_count` entries; returns how many.
  std::size_t gather(iovec* iov, std::size_t max_count) const;

  std::vector<Block> blocks_;    // blocks_[head_..] are pending; vector, not deque: an idle
  std::size_t head_ = 0;         // connection's empty queue must cost no heap memory
  std::size_t head_offset_ = 0;  // bytes of blocks_[head_] already written
  std::size_t bytes_ = 0;
};

// Owns the output side of one watched fd. The owner keeps the watch (and the fd) and forwards
// EPOLLOUT to on_writable(); the writer adds and removes EPOLLOUT on the watch as needed.
class SocketWriter final : private EventLoop::Flushable {
 public:
  // Called once when a write fails (peer reset, EPIPE); the owner usually closes the connection.
  using ErrorHandler = std::function<void(int error)>;

  SocketWriter(EventLoop& loop, int fd, ErrorHandler on_error);
  // Writes through `stream` (TLS or plain, on `stream.fd()`), which must outlive the writer.
  SocketWriter(EventLoop& loop, ByteStream& stream, ErrorHandler on_error);
  SocketWriter(const SocketWriter&) = delete;
  SocketWriter& operator=(const SocketWriter&) = delete;
  ~SocketWriter();

  // Queues bytes; they are written when the current batch ends (many sends, one writev).
  void send(Block block);
  void send(std::string_view bytes) { send(make_block(std::string(bytes))); }
  // Writes now instead of at the end of the batch.
  void flush();
  // Forward EPOLLOUT here.
  void on_writable() { flush(); }
  // Stops all writing (the connection is closing); pending bytes are dropped.
  void detach() noexcept;

  [[nodiscard]] std::size_t queued() const noexcept { return queue_.bytes(); }
  // Runs `callback` once everything queued so far has been written (or the writer failed).
  void when_drained(std::function<void()> callback);

 private:
  void schedule_flush();
  void on_batch_end() override { flush(); }
  void set_want_writable(bool want);

  EventLoop& loop_;
  int fd_;
  ByteStream* stream_ = nullptr;  // null: plain writev on fd_
  ErrorHandler on_error_;
  OutputQueue queue_;
  std::function<void()> on_drained_;
  bool failed_ = false;
};

}  // namespace mux
