#include "upload/chunk_reader.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "core/base/threads.hpp"

namespace mux {
namespace {

constexpr std::size_t kChunkSize = 1 << 20;
// Enough chunks in flight that the thread is never waiting on a send it could have read ahead
// of, few enough to stay in cache.
constexpr std::size_t kSlots = 4;

}  // namespace

ChunkReader::ChunkReader(int file_fd, std::uint64_t offset, std::optional<std::uint64_t> size,
                         ContentHash prefix)
    : file_fd_(file_fd),
      offset_(offset),
      size_(size),
      ready_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      stop_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      hash_(std::move(prefix)),
      slots_(kSlots) {
  if (!ready_ || !stop_) throw std::system_error(errno, std::generic_category(), "eventfd");
  for (Slot& slot : slots_)
    slot.bytes.resize(kChunkSize);
  thread_ = start_thread_without_signals([this] { read_all(); });
}

ChunkReader::~ChunkReader() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  slot_freed_.notify_all();
  std::uint64_t one = 1;
  (void)::write(stop_.get(), &one, sizeof one);  // wakes a thread waiting for a stream's bytes
  if (thread_.joinable()) thread_.join();
}

void ChunkReader::signal_ready() {
  std::uint64_t one = 1;
  (void)::write(ready_.get(), &one, sizeof one);
}

void ChunkReader::clear_ready() {
  std::uint64_t count = 0;
  (void)::read(ready_.get(), &count, sizeof count);
}

bool ChunkReader::wait_for_free_slot(Slot& slot) {
  std::unique_lock lock(mutex_);
  slot_freed_.wait(lock, [&] { return stopping_ || !slot.filled; });
  return !stopping_;
}

ssize_t ChunkReader::read_some(char* buffer, std::size_t want, std::uint64_t done) const {
  while (true) {
    if (!size_) {
      // A pipe may stay silent forever (its writer still open): wait for bytes or for the
      // destructor, never in read(2), so stopping never hangs on the input.
      pollfd waits[2] = {{file_fd_, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(waits, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return -1;
      }
      if (waits[1].revents != 0) {
        errno = ECANCELED;
        return -1;
      }
    }
    ssize_t got = size_ ? ::pread(file_fd_, buffer, want, static_cast<off_t>(offset_ + done))
                        : ::read(file_fd_, buffer, want);
    if (got >= 0) return got;
    // EAGAIN: standard input inherited in non-blocking mode; poll again.
    if (errno != EINTR && (size_ || (errno != EAGAIN && errno != EWOULDBLOCK))) return got;
  }
}

void ChunkReader::read_all() {
  std::uint64_t done = 0;
  for (std::size_t index = 0; !size_ || done < *size_; ++index) {
    Slot& slot = slots_[index % slots_.size()];
    if (!wait_for_free_slot(slot)) return;
    std::size_t want =
        size_ ? static_cast<std::size_t>(std::min<std::uint64_t>(*size_ - done, kChunkSize))
              : kChunkSize;
    ssize_t got = read_some(slot.bytes.data(), want, done);
    if (got == 0 && !size_) break;  // the end of the stream
    if (got <= 0) {
      std::lock_guard lock(mutex_);
      failure_ = got == 0 ? "the file got shorter while it was being sent"
                          : std::generic_category().message(errno);
      signal_ready();
      return;
    }
    hash_.update(slot.bytes.data(), static_cast<std::size_t>(got));
    done += static_cast<std::uint64_t>(got);
    {
      std::lock_guard lock(mutex_);
      slot.size = static_cast<std::size_t>(got);
      slot.filled = true;
    }
    signal_ready();
  }
  {
    std::lock_guard lock(mutex_);
    read_everything_ = true;
  }
  signal_ready();
}

std::optional<std::string_view> ChunkReader::front() {
  std::lock_guard lock(mutex_);
  const Slot& slot = slots_[head_ % slots_.size()];
  if (!slot.filled) return std::nullopt;
  return std::string_view(slot.bytes.data(), slot.size);
}

void ChunkReader::pop_front() {
  {
    std::lock_guard lock(mutex_);
    slots_[head_ % slots_.size()].filled = false;
    ++head_;
  }
  slot_freed_.notify_one();
}

bool ChunkReader::at_end() {
  std::lock_guard lock(mutex_);
  return read_everything_ && !slots_[head_ % slots_.size()].filled;
}

std::string ChunkReader::failure() {
  std::lock_guard lock(mutex_);
  return failure_;
}

std::string ChunkReader::hash_hex() {
  if (thread_.joinable()) thread_.join();
  return hash_.hex();
}

}  // namespace mux
