#include "upload/progress_display.hpp"

#include <fmt/format.h>

#include <cmath>

#include "core/units.hpp"

namespace mux {
namespace {

// The rate shown is measured over about this long: short enough to show a stall, long enough
// not to flicker.
constexpr double kRateWindowSeconds = 2.0;
constexpr const char* kClearToEndOfLine = "\x1b[K";

}  // namespace

std::string format_progress_line(std::uint64_t sent, std::optional<std::uint64_t> total,
                                 double bytes_per_second) {
  std::string line;
  if (total) {
    double fraction = *total == 0 ? 1.0 : static_cast<double>(sent) / static_cast<double>(*total);
    line = fmt::format("{:3.0f}%  {} of {}", std::floor(fraction * 100), format_bytes(sent),
                       format_bytes(*total));
  } else {
    line = format_bytes(sent);
  }
  line += fmt::format("  {}", format_rate(bytes_per_second));
  if (total && bytes_per_second > 0 && sent < *total) {
    line += fmt::format("  ETA {}",
                        format_duration(static_cast<double>(*total - sent) / bytes_per_second));
  }
  return line;
}

std::vector<std::string> progress_step_lines(std::uint64_t before, std::uint64_t after) {
  std::vector<std::string> lines;
  for (std::uint64_t step = before / kProgressStep + 1; step <= after / kProgressStep; ++step) {
    lines.push_back(fmt::format("Sent {} MB", step * 10));
  }
  return lines;
}

std::string format_upload_summary(std::uint64_t bytes, double seconds, std::string_view hash) {
  double rate = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
  return fmt::format("Sent {} bytes in {:.3f} s ({}), verified {}", bytes, seconds,
                     format_rate(rate), hash);
}

ProgressDisplay::ProgressDisplay(Style style, std::optional<std::uint64_t> total, std::FILE* out)
    : style_(style), total_(total), out_(out) {
  samples_.emplace_back(0.0, 0);  // the first redraw shows the rate since the start
}

void ProgressDisplay::update(std::uint64_t sent, double /*elapsed*/) {
  if (style_ == Style::lines) {
    for (const std::string& line : progress_step_lines(sent_, sent))
      fmt::print(out_, "{}\n", line);
    std::fflush(out_);
  }
  sent_ = sent;
}

double ProgressDisplay::recent_rate(double elapsed) const {
  if (samples_.empty()) return 0;
  double span = elapsed - samples_.front().first;
  if (span <= 0) return 0;
  return static_cast<double>(sent_ - samples_.front().second) / span;
}

void ProgressDisplay::redraw(double elapsed) {
  if (style_ != Style::terminal) return;
  samples_.emplace_back(elapsed, sent_);
  while (samples_.size() > 2 && elapsed - samples_[1].first >= kRateWindowSeconds) {
    samples_.pop_front();
  }
  fmt::print(out_, "\r{}{}", format_progress_line(sent_, total_, recent_rate(elapsed)),
             kClearToEndOfLine);
  std::fflush(out_);
  line_drawn_ = true;
}

void ProgressDisplay::clear() {
  if (!line_drawn_) return;
  fmt::print(out_, "\r{}", kClearToEndOfLine);
  std::fflush(out_);
  line_drawn_ = false;
}

void ProgressDisplay::finish(std::string_view summary) {
  clear();
  if (style_ == Style::silent) return;
  fmt::print(out_, "{}\n", summary);
  std::fflush(out_);
}

}  // namespace mux
