#include "upload/progress_display.hpp"

#include <sys/ioctl.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/base/units.hpp"

namespace mux {
namespace {

// The rate shown is measured over about this long: short enough to show a stall, long enough
// not to flicker.
constexpr double kRateWindowSeconds = 2.0;
constexpr const char* kClearToEndOfLine = "\x1b[K";
// A bar narrower than this says nothing a percent does not.
constexpr std::size_t kMinBar = 10;
constexpr std::size_t kDefaultWidth = 80;

// The terminal's width in columns; a terminal that will not say gets the usual 80.
std::size_t terminal_width(std::FILE* out) {
  winsize size{};
  if (::ioctl(::fileno(out), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return kDefaultWidth;
}

std::string bar(double fraction, std::size_t width) {
  std::size_t inside = width - 2;
  auto filled = static_cast<std::size_t>(std::floor(std::clamp(fraction, 0.0, 1.0) * inside));
  std::string text = "[";
  text.append(filled, '=');
  if (filled < inside) {
    text += '>';
    text.append(inside - filled - 1, ' ');
  }
  text += ']';
  return text;
}

}  // namespace

std::string format_clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-:--";
  auto total = static_cast<std::uint64_t>(std::llround(seconds));
  if (total < 3600) return fmt::format("{}:{:02}", total / 60, total % 60);
  return fmt::format("{}:{:02}:{:02}", total / 3600, (total % 3600) / 60, total % 60);
}

std::string format_progress_line(const ProgressSnapshot& snapshot, std::size_t width) {
  const auto& [sent, total, rate, elapsed, stalled, files] = snapshot;
  double fraction = 1.0;
  if (total && *total > 0) fraction = static_cast<double>(std::min(sent, *total)) / *total;
  // Parts in the order shown, each with the rank it keeps when space runs out (lower: kept
  // longer). The bar is fitted last, into what is left.
  struct Part {
    std::string text;
    int rank;
  };
  std::vector<Part> parts;
  if (files) parts.push_back({fmt::format("{}/{} files,", files->first, files->second), 0});
  if (total && files) {
    parts.push_back({format_bytes(sent), 2});
    parts.push_back({fmt::format("of {}", format_bytes(*total)), 5});
  } else if (total) {
    parts.push_back({fmt::format("{:3.0f}%", std::floor(fraction * 100)), 0});
    parts.push_back({format_bytes(sent), 2});
    parts.push_back({fmt::format("/ {}", format_bytes(*total)), 5});
  } else {
    parts.push_back({format_bytes(sent), 0});
  }
  if (stalled >= kStallMarkSeconds) {
    parts.push_back({fmt::format("stalled {}", format_clock(stalled)), 1});
  } else {
    parts.push_back({format_rate(rate), 3});
  }
  parts.push_back({format_clock(elapsed), 6});
  if (total && rate > 0 && sent < *total && stalled < kStallMarkSeconds) {
    parts.push_back(
        {fmt::format("ETA {}", format_clock(static_cast<double>(*total - sent) / rate)), 4});
  }
  std::size_t room = width > 1 ? width - 1 : 0;
  auto length = [&parts] {
    std::size_t sum = parts.size() - 1;  // the spaces between parts
    for (const Part& part : parts)
      sum += part.text.size();
    return sum;
  };
  while (parts.size() > 1 && length() > room) {
    auto worst = std::max_element(parts.begin(), parts.end(),
                                  [](const Part& a, const Part& b) { return a.rank < b.rank; });
    parts.erase(worst);
  }
  std::string line;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) line += ' ';
    line += parts[i].text;
    // The bar goes after the percent, and only when it fits at a useful width.
    if (i == 0 && total && room >= length() + 1 + kMinBar) {
      line += ' ';
      line += bar(fraction, room - length() - 1);
    }
  }
  if (line.size() > room) line.resize(room);
  return line;
}

std::vector<std::string> progress_step_lines(std::uint64_t before, std::uint64_t after) {
  std::vector<std::string> lines;
  for (std::uint64_t step = before / kProgressStep + 1; step <= after / kProgressStep; ++step) {
    lines.push_back(fmt::format("Sent {} MiB", step * (kProgressStep >> 20)));
  }
  return lines;
}

std::string format_batch_summary(std::uint64_t files, std::uint64_t bytes, double seconds,
                                 std::uint64_t skipped) {
  double rate = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
  std::string line =
      fmt::format("Sent {} file{} ({}) in {:.3f} s ({}), each verified", files,
                  files == 1 ? "" : "s", format_bytes(bytes), seconds, format_rate(rate));
  if (skipped > 0) line += fmt::format(", {} already there from an earlier run", skipped);
  return line;
}

std::string format_upload_summary(std::uint64_t bytes, double seconds, std::string_view hash,
                                  std::string_view saved_name, std::optional<std::uint64_t> whole) {
  double rate = seconds > 0 ? static_cast<double>(bytes) / seconds : 0;
  std::string summary = fmt::format("Sent {} bytes in {:.3f} s ({}), verified {}", bytes, seconds,
                                    format_rate(rate), hash);
  if (whole) summary += fmt::format(" of all {} bytes", *whole);
  if (!saved_name.empty()) summary += fmt::format(", saved as {}", saved_name);
  return summary;
}

ProgressDisplay::ProgressDisplay(Style style, std::optional<std::uint64_t> total, std::FILE* out)
    : style_(style), total_(total), out_(out) {
  samples_.emplace_back(0.0, 0);  // the first redraw shows the rate since the start
  if (style_ == Style::terminal) refit();
}

void ProgressDisplay::refit() {
  // A terminal that re-wraps on narrowing may leave the old line's tail on a row above; the
  // next redraw clears only its own row rather than guess and erase someone else's output.
  width_ = terminal_width(out_);
}

void ProgressDisplay::update(std::uint64_t sent, double elapsed) {
  if (style_ == Style::lines && sent > lines_up_to_) {
    std::string files =
        files_ ? fmt::format(", {}/{} files", files_->first, files_->second) : std::string();
    for (const std::string& line : progress_step_lines(lines_up_to_, sent))
      fmt::print(out_, "{}{}\n", line, files);
    std::fflush(out_);
    lines_up_to_ = sent;
  }
  if (sent != sent_) last_movement_ = elapsed;
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
  ProgressSnapshot snapshot{sent_, total_, recent_rate(elapsed), elapsed, elapsed - last_movement_,
                            files_};
  fmt::print(out_, "\r{}{}", format_progress_line(snapshot, width_), kClearToEndOfLine);
  std::fflush(out_);
  line_drawn_ = true;
}

void ProgressDisplay::clear() {
  if (!line_drawn_) return;
  fmt::print(out_, "\r{}", kClearToEndOfLine);
  std::fflush(out_);
  line_drawn_ = false;
}

void ProgressDisplay::note(std::string_view text) {
  clear();
  if (style_ == Style::silent) return;
  fmt::print(out_, "{}\n", text);
  std::fflush(out_);
}

void ProgressDisplay::start_at(std::uint64_t sent, double elapsed) {
  sent_ = sent;
  lines_up_to_ = std::max(lines_up_to_, sent);
  last_movement_ = elapsed;
  samples_.clear();
  samples_.emplace_back(elapsed, sent);
}

void ProgressDisplay::set_files(std::uint64_t done, std::uint64_t total) {
  files_.emplace(done, total);
}

void ProgressDisplay::finish(std::string_view summary) {
  clear();
  if (style_ == Style::silent) return;
  fmt::print(out_, "{}\n", summary);
  std::fflush(out_);
}

}  // namespace mux
