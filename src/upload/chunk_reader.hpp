// ChunkReader: reads the file being uploaded ahead of the sender, on its own thread, in chunks of
// up to 1 MiB, and hashes each chunk as it reads it. A regular file is read with pread(2) for its
// known size; a stream (a pipe, a socket, a terminal) with read(2) until its end, each chunk
// handed over as soon as a read returns, so a slow pipe is sent as it trickles in. Reading the file
// and hashing it then overlap with the event loop sending the previous chunks, on another core.
// Owned by UploadSender, which takes chunks in order with front()/pop_front() and watches
// ready_fd() (an eventfd the thread signals after each chunk, and once more when it stops).
//
// Measured on loopback, 1 GiB from the page cache into a discarding server (medians of 6
// interleaved runs; iperf3 3.76 GB/s): this thread 3.40 GB/s; pread+hash+send on the loop's
// thread 2.67; sendfile(2) with the hash from pread 1.70 (the receiver then copies out of
// thousands of page-cache pages, and the hash needs its own pass over the file anyway); mmap
// windows for the hash and the send 2.30 (page faults).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/loop/fd.hpp"
#include "upload/content_hash.hpp"

namespace mux {

class ChunkReader {
 public:
  // Reads `size` bytes of `file_fd` from `offset`; with no size, reads the stream `file_fd` until
  // its end. The fd must outlive the reader.
  // `prefix` is the hash of what came before `offset` (a resumed upload), so hash_hex() covers
  // the whole file.
  ChunkReader(int file_fd, std::uint64_t offset, std::optional<std::uint64_t> size,
              ContentHash prefix = ContentHash());
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;
  ~ChunkReader();  // stops the thread and waits for it

  // Readable (EPOLLIN) after a chunk was read or the reader stopped; the loop calls
  // clear_ready() before looking at front().
  [[nodiscard]] int ready_fd() const noexcept { return ready_.get(); }
  void clear_ready();

  // The oldest chunk not yet handed back with pop_front(), or nullopt if the thread has not read
  // it yet (or failed: see failure()).
  [[nodiscard]] std::optional<std::string_view> front();
  void pop_front();
  // True once every byte was read (the size, or the stream's end) and every chunk popped.
  [[nodiscard]] bool at_end();

  // Why reading stopped early: the errno text, or that the file got shorter; empty if it did not.
  [[nodiscard]] std::string failure();
  // The hash of every byte read; call once every chunk was popped (it waits for the thread).
  [[nodiscard]] std::string hash_hex();

 private:
  struct Slot {
    std::vector<char> bytes;
    std::size_t size = 0;
    bool filled = false;
  };

  void read_all();
  // One read into `buffer` at `done` bytes in: >0 bytes, 0 at the end, <0 with errno set.
  ssize_t read_some(char* buffer, std::size_t want, std::uint64_t done) const;
  bool wait_for_free_slot(Slot& slot);
  void signal_ready();

  int file_fd_;
  std::uint64_t offset_;
  std::optional<std::uint64_t> size_;  // none: a stream, read until its end
  Fd ready_;
  Fd stop_;           // eventfd: readable once the destructor wants the thread gone
  ContentHash hash_;  // touched only by the thread until it is joined
  std::mutex mutex_;
  std::condition_variable slot_freed_;
  std::vector<Slot> slots_;
  std::size_t head_ = 0;  // next slot to send (main thread)
  std::string failure_;
  bool read_everything_ = false;  // the thread reached the size or the end of the stream
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mux
