#include "core/loop/output_queue.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <utility>

#include "core/loop/byte_stream.hpp"

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
    // All written: give the storage back. Most connections of a big room sit idle after their
    // welcome and a burst of join notices, and a kept capacity was up to 1 KiB each (issue 25);
    // the next send's allocation is a small-block malloc, cheap beside its writev.
    std::vector<Block>().swap(blocks_);
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

}  // namespace mux
