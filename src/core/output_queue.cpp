#include "core/output_queue.hpp"

#include <sys/epoll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <utility>

#include "core/byte_stream.hpp"
#include "core/event_loop.hpp"

namespace mux {
namespace {
// Enough iovecs that one writev covers a large backlog of short chat lines.
constexpr std::size_t kMaxIovecs = 256;
static_assert(kMaxIovecs <= IOV_MAX);
}  // namespace

void OutputQueue::push(Block block) {
  if (!block || block->empty()) return;
  bytes_ += block->size();
  blocks_.push_back(std::move(block));
}

void OutputQueue::clear() noexcept {
  blocks_.clear();
  blocks_.shrink_to_fit();
  head_ = 0;
  head_offset_ = 0;
  bytes_ = 0;
}

void OutputQueue::consume(std::size_t written) {
  bytes_ -= written;
  while (written > 0) {
    const std::string& head = *blocks_[head_];
    std::size_t left_in_head = head.size() - head_offset_;
    if (written < left_in_head) {
      head_offset_ += written;
      return;
    }
    written -= left_in_head;
    blocks_[head_].reset();  // release the shared block as soon as this receiver is done with it
    ++head_;
    head_offset_ = 0;
  }
  if (head_ == blocks_.size()) {
    blocks_.clear();
    // A receiver that once had a large backlog should not keep the capacity forever.
    if (blocks_.capacity() > 64) blocks_.shrink_to_fit();
    head_ = 0;
  } else if (head_ > 64 && head_ * 2 > blocks_.size()) {
    blocks_.erase(blocks_.begin(), blocks_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
  }
}

std::size_t OutputQueue::gather(iovec* iov, std::size_t max_count) const {
  std::size_t count = 0;
  std::size_t offset = head_offset_;
  for (std::size_t i = head_; i < blocks_.size() && count < max_count; ++i) {
    const std::string& block = *blocks_[i];
    iov[count].iov_base = const_cast<char*>(block.data() + offset);
    iov[count].iov_len = block.size() - offset;
    ++count;
    offset = 0;
  }
  return count;
}

OutputQueue::Status OutputQueue::write_to(int fd, int& error) {
  error = 0;
  while (bytes_ > 0) {
    iovec iov[kMaxIovecs];
    std::size_t count = gather(iov, kMaxIovecs);
    ssize_t written = ::writev(fd, iov, static_cast<int>(count));
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::blocked;
      error = errno;
      return Status::failed;
    }
    consume(static_cast<std::size_t>(written));
  }
  return Status::drained;
}

OutputQueue::Status OutputQueue::write_to(ByteStream& stream, IoResult& failure) {
  while (bytes_ > 0) {
    iovec iov[kMaxIovecs];
    std::size_t count = gather(iov, kMaxIovecs);
    IoResult result = stream.writev(iov, static_cast<int>(count));
    if (result.blocked()) return Status::blocked;
    if (!result.ok()) {
      failure = std::move(result);
      return Status::failed;
    }
    consume(result.bytes);
  }
  return Status::drained;
}

SocketWriter::SocketWriter(EventLoop& loop, int fd, ErrorHandler on_error)
    : loop_(loop), fd_(fd), on_error_(std::move(on_error)) {}

SocketWriter::SocketWriter(EventLoop& loop, ByteStream& stream, ErrorHandler on_error)
    : SocketWriter(loop, stream.fd(), std::move(on_error)) {
  stream_ = &stream;
}

SocketWriter::~SocketWriter() {
  loop_.cancel_flush(*this);
}

void SocketWriter::send(Block block) {
  if (failed_ || fd_ < 0) return;
  queue_.push(std::move(block));
  schedule_flush();
}

void SocketWriter::schedule_flush() {
  // While EPOLLOUT is armed the kernel buffer is full: the writable event will flush.
  if (loop_.interest(fd_) & EPOLLOUT) return;
  loop_.flush_at_batch_end(*this);
}

void SocketWriter::flush() {
  // Everything queued is written now: nothing is left for the batch's end.
  loop_.cancel_flush(*this);
  if (failed_ || fd_ < 0) return;
  int error = 0;
  OutputQueue::Status status = OutputQueue::Status::drained;
  if (stream_ != nullptr) {
    IoResult failure;
    status = queue_.write_to(*stream_, failure);
    error = failure.error;
  } else {
    status = queue_.write_to(fd_, error);
  }
  switch (status) {
    case OutputQueue::Status::drained:
      set_want_writable(false);
      if (on_drained_) std::exchange(on_drained_, nullptr)();
      return;
    case OutputQueue::Status::blocked:
      set_want_writable(true);
      return;
    case OutputQueue::Status::failed:
      failed_ = true;
      queue_.clear();
      set_want_writable(false);
      if (on_drained_) std::exchange(on_drained_, nullptr)();
      if (on_error_) on_error_(error);
      return;
  }
}

void SocketWriter::set_want_writable(bool want) {
  if (!loop_.watching(fd_)) return;
  std::uint32_t current = loop_.interest(fd_);
  std::uint32_t wanted =
      want ? (current | EPOLLOUT) : (current & ~static_cast<std::uint32_t>(EPOLLOUT));
  loop_.modify(fd_, wanted);
}

void SocketWriter::detach() noexcept {
  loop_.cancel_flush(*this);
  queue_.clear();
  on_drained_ = nullptr;
  fd_ = -1;
}

void SocketWriter::when_drained(std::function<void()> callback) {
  if (queue_.empty() || failed_ || fd_ < 0) {
    callback();
    return;
  }
  on_drained_ = std::move(callback);
}

}  // namespace mux
