// ProgressDisplay: how upload-client shows an upload going out. On a terminal, one line redrawn in
// place (percent, bytes, rate, ETA) at most ~10 times a second; elsewhere (a pipe, a log file) a
// plain line at each 10 MiB, never an escape code. Owned by the upload client, which reports
// every send with update() and calls redraw() from a 100 ms timer. The formatting is split into
// pure functions so it is unit-tested without a terminal.
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

inline constexpr std::uint64_t kProgressStep = 10ULL << 20;  // one "Sent N MB" line per 10 MiB

// The terminal line (no "\r", no escape codes): " 42%  420.0 MiB of 1.0 GiB  1.21 GB/s  ETA 3 s".
// `total` is unknown for nothing mux sends today, but the line copes; rate 0 shows no ETA.
std::string format_progress_line(std::uint64_t sent, std::optional<std::uint64_t> total,
                                 double bytes_per_second);
// "Sent 10 MB", "Sent 20 MB"...: one line for each 10 MiB step passed going from `before` to
// `after` bytes.
std::vector<std::string> progress_step_lines(std::uint64_t before, std::uint64_t after);
// "Sent <bytes> bytes in <seconds> s (<rate>), verified <hash>"
std::string format_upload_summary(std::uint64_t bytes, double seconds, std::string_view hash);

class ProgressDisplay {
 public:
  enum class Style { terminal, lines, silent };

  ProgressDisplay(Style style, std::optional<std::uint64_t> total, std::FILE* out);

  // `sent` bytes so far, `elapsed` seconds since the upload started.
  void update(std::uint64_t sent, double elapsed);
  // Terminal: draws the line with the rate over the last second or so.
  void redraw(double elapsed);
  // Clears the terminal line (if drawn) and prints the summary.
  void finish(std::string_view summary);
  // Clears the terminal line so an error message starts on a clean line.
  void clear();

  [[nodiscard]] Style style() const noexcept { return style_; }

 private:
  [[nodiscard]] double recent_rate(double elapsed) const;

  Style style_;
  std::optional<std::uint64_t> total_;
  std::FILE* out_;
  std::uint64_t sent_ = 0;
  std::deque<std::pair<double, std::uint64_t>> samples_;  // (elapsed, sent) at recent redraws
  bool line_drawn_ = false;
};

}  // namespace mux
