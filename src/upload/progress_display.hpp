// ProgressDisplay: how upload-client shows an upload going out. On a terminal, one line redrawn in
// place at most ~10 times a second, fitted to the terminal's width (re-measured on SIGWINCH):
// percent, a bar, bytes, rate, elapsed time, ETA, and "stalled N s" once nothing has moved for a
// few seconds. Elsewhere (a pipe, a log file) a plain "Sent N MiB" line at each 10 MiB, never an
// escape code. Sizes and rates are IEC (KiB, MiB/s) everywhere. Owned by the upload client, which
// reports every send with update() and calls redraw() from a 100 ms timer. The formatting is
// split into pure functions so it is unit-tested without a terminal.
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mux {

inline constexpr std::uint64_t kProgressStep = 10ULL << 20;  // one "Sent N MiB" line per 10 MiB
// Nothing sent for this long: the line says "stalled" instead of a rate that is only decaying.
inline constexpr double kStallMarkSeconds = 3.0;

// What one redraw shows.
struct ProgressSnapshot {
  std::uint64_t sent = 0;
  std::optional<std::uint64_t> total;  // none: a stream (standard input from a pipe)
  double bytes_per_second = 0;         // over the last couple of seconds
  double elapsed = 0;                  // seconds since the upload started
  double stalled = 0;                  // seconds since a byte last went out
  // Several files (a directory, --file given more than once): confirmed and total, shown first
  // ("12/60 files, 1.2 GiB of 3.4 GiB" in rsync --info=progress2's manner); none for one file.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> files;
};

// "0:05", "1:02", "1:02:03": the clock form curl, pv and rsync use for elapsed time and ETA.
std::string format_clock(double seconds);
// The terminal line (no "\r", no escape codes), at most `width - 1` columns (the last column
// would make some terminals wrap): " 42% [=====>    ] 420.0 MiB / 1.0 GiB  12.3 MiB/s  0:35  ETA
// 0:48". The least useful parts go first when narrow: the bar, then elapsed time, the total,
// ETA, the rate, the bytes; the percent (for a stream, the bytes) and a stall marker stay.
std::string format_progress_line(const ProgressSnapshot& snapshot, std::size_t width);
// "Sent 10 MiB", "Sent 20 MiB"...: one line for each 10 MiB step passed going from `before` to
// `after` bytes.
std::vector<std::string> progress_step_lines(std::uint64_t before, std::uint64_t after);
// "Sent <bytes> bytes in <seconds> s (<IEC rate>), verified <hash>[, saved as <name>]"
// A resumed upload (`whole` bytes in all, of which `bytes` were sent this run) says so:
// "..., verified <hash> of all <whole> bytes[, saved as <name>]".
// Several files: "Sent 60 files (3.4 GiB) in 2.1 s (1.6 GiB/s), each verified[, 12 already
// there]"; `skipped` files were confirmed by an earlier run of the same command.
std::string format_batch_summary(std::uint64_t files, std::uint64_t bytes, double seconds,
                                 std::uint64_t skipped);
std::string format_upload_summary(std::uint64_t bytes, double seconds, std::string_view hash,
                                  std::string_view saved_name = {},
                                  std::optional<std::uint64_t> whole = std::nullopt);

class ProgressDisplay {
 public:
  enum class Style { terminal, lines, silent };

  ProgressDisplay(Style style, std::optional<std::uint64_t> total, std::FILE* out);

  // `sent` bytes so far, `elapsed` seconds since the upload started.
  void update(std::uint64_t sent, double elapsed);
  // Terminal: draws the line with the rate over the last second or so.
  void redraw(double elapsed);
  // Terminal: measures the width again (SIGWINCH); the next redraw fits it.
  void refit();
  // A line for the person before the progress ("Resumed at 760.0 MiB of 2.0 GiB").
  void note(std::string_view text);
  // A resumed upload: the progress starts at `sent` bytes (not counted in the rate).
  void start_at(std::uint64_t sent, double elapsed);
  // Several files: `done` of `total` confirmed, shown before the bytes.
  void set_files(std::uint64_t done, std::uint64_t total);
  // Clears the terminal line (if drawn) and prints the summary.
  void finish(std::string_view summary);
  // Clears the terminal line so an error message starts on a clean line.
  void clear();

  [[nodiscard]] Style style() const noexcept { return style_; }
  [[nodiscard]] std::size_t width() const noexcept { return width_; }

 private:
  [[nodiscard]] double recent_rate(double elapsed) const;

  Style style_;
  std::optional<std::uint64_t> total_;
  std::FILE* out_;
  std::size_t width_ = 80;
  std::uint64_t sent_ = 0;
  // The most shown so far: a "Sent N MiB" line is printed once, even when the count starts
  // lower again (a new try, the server's first ACK).
  std::uint64_t lines_up_to_ = 0;
  double last_movement_ = 0;                              // elapsed at the last byte sent
  std::deque<std::pair<double, std::uint64_t>> samples_;  // (elapsed, sent) at recent redraws
  bool line_drawn_ = false;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> files_;
};

}  // namespace mux
