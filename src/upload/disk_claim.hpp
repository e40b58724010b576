// DiskClaim: what one upload may take of --output-dir's disk, so UploadSession only says when
// data comes and where the file stands. --min-free is checked once per kReserveStep of data (a
// statvfs); space is reserved (fallocate) ahead of the data, only as far ahead as the data
// already received, at most kReserveStep and, for all uploads of one process together,
// kMaxReservedAhead (the shared counter); an upload that brings no byte for kReservationIdle
// gives its reservation back (ftruncate). One per UploadSession with --output-dir, for the
// upload in progress (a batch's next member starts it again).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "core/loop/event_loop.hpp"

namespace mux {

class Logger;
class OutputDirectory;
class PartialFile;

// Disk space is reserved (fallocate) ahead of the data so large uploads land in few extents, but
// only as far ahead as the data already received (an upload that sent 1 byte reserves 1 byte
// more) and at most this step: a header announcing 10 GB claims nothing by itself.
inline constexpr std::uint64_t kReserveStep = 8 << 20;
// All uploads of one process together hold at most this much reserved and not yet written;
// past it, uploads write without reserving ahead (slower, never refused).
inline constexpr std::uint64_t kMaxReservedAhead = 256 << 20;
// An upload that brings no byte for this long gives its reservation back (ftruncate).
inline constexpr std::chrono::seconds kReservationIdle{2};

class DiskClaim {
 public:
  // `shared_ahead`: reserved and not yet written, every upload of the process together.
  // `label` names the client in log lines ("[Client 3] 127.0.0.1:5555").
  DiskClaim(EventLoop& loop, Logger& logger, const OutputDirectory& directory,
            std::uint64_t& shared_ahead, std::uint64_t min_free, std::string label);
  DiskClaim(const DiskClaim&) = delete;
  DiskClaim& operator=(const DiskClaim&) = delete;
  ~DiskClaim();

  // The file's data ends at `stored` (0, or what a resumed upload continues from); nothing is
  // reserved past it and --min-free is checked at the next write.
  void start_at(std::uint64_t stored);
  // Some bytes of the upload arrived (header or body): it is not idle.
  void data_arrived() noexcept { last_data_ = EventLoop::Clock::now(); }
  // Before `file` grows to `end` bytes (of `expected` announced): 0, or ENOSPC when --min-free
  // says stop (logged). Reserves ahead; a reservation that fails is not an error (the write
  // allocates what it needs).
  [[nodiscard]] int before_write(PartialFile& file, std::uint64_t end,
                                 std::optional<std::uint64_t> expected);
  // The file holds `stored` bytes now.
  void written(std::uint64_t stored);
  // What is reserved past the data stops counting (the upload ends or its file goes); the file
  // keeps its blocks until it is cut or removed.
  void release();
  // Reserved past the data.
  [[nodiscard]] std::uint64_t ahead() const noexcept;

 private:
  void on_idle();

  EventLoop& loop_;
  Logger& logger_;
  const OutputDirectory& directory_;
  std::uint64_t& shared_ahead_;
  std::uint64_t min_free_;
  std::string label_;
  PartialFile* file_ = nullptr;  // the file reserved in, until release()
  std::uint64_t stored_ = 0;
  std::uint64_t reserved_ = 0;          // the file's allocated end (fallocate), >= stored_ or 0
  std::uint64_t next_space_check_ = 0;  // --min-free: statvfs again once the data reaches this
  EventLoop::Clock::time_point last_data_ = EventLoop::Clock::now();
  EventLoop::TimerId timer_ = 0;
};

}  // namespace mux
