// OutputQueue: the bytes a non-blocking fd still owes its peer. write_to() hands the kernel as
// much as it takes in one writev and keeps the rest. Data is held as shared immutable blocks, so
// one formatted broadcast line queued for a thousand receivers is one allocation, not a thousand.
// Connection keeps one and writes it through its ByteStream.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

  // Writes through `stream` (TLS or plain) until drained or it takes no more; `failure` is set
  // when it returns failed.
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

}  // namespace mux
