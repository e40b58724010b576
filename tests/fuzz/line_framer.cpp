// LineFramer against a reference model. The input is cut into chunks ("reads") separated by
// gaps on a fake clock; a chunk that does not end in '\n' arms a timer that flushes the partial
// line when the next chunk is later than kQuietTime, or once the partial line is kLineTime old
// however steadily it drips — what ClientSession does with its real timer. At the end the peer
// closes, which flushes once more.
//
// The model: the flush points and the '\n's cut the input into segments that, joined, are the
// input again. Each segment yields at most one line: the segment without its '\n' and without one
// '\r' before the end, if that fits in max_line; otherwise its first max_line bytes, marked
// truncated, and the rest of the segment is dropped. An empty segment closed by a flush yields
// nothing. The framer must emit exactly these lines, each as soon as it is known (at the '\n',
// or at the byte that crosses the cap), and report a partial line exactly when the open segment
// has bytes it will still deliver.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "core/base/line_framer.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::line_framer {
namespace {

using std::chrono::milliseconds;
// ClientSession's quiet time and line age limit.
constexpr milliseconds kQuietTime{100};
constexpr milliseconds kLineTime{5000};
// Gaps the fake clock can advance by between two reads: around the quiet time on purpose.
constexpr milliseconds kGaps[] = {milliseconds{0},   milliseconds{1},   milliseconds{50},
                                  milliseconds{99},  milliseconds{100}, milliseconds{101},
                                  milliseconds{250}, milliseconds{5000}};

struct Line {
  std::string text;
  bool truncated = false;
  bool operator==(const Line&) const = default;
};

std::string describe(const std::vector<Line>& lines) {
  std::string shown;
  for (const Line& line : lines)
    shown += fmt::format("{}{} ", printable(line.text), line.truncated ? "(cut)" : "");
  return shown;
}

// The reference model, fed the same reads and flushes, one segment at a time.
class Model {
 public:
  explicit Model(std::size_t max_line) : max_line_(max_line) {}

  void feed(std::string_view bytes) {
    for (char c : bytes) {
      open_ += c;
      if (c == '\n')
        close_segment(true);
      else if (!cut_emitted_ && over_cap()) {
        lines_.push_back({open_.substr(0, max_line_), true});
        cut_emitted_ = true;
      }
    }
  }
  void flush() { close_segment(false); }

  // Bytes of the open segment the framer still holds and will deliver.
  [[nodiscard]] bool has_partial() const { return !open_.empty() && !cut_emitted_; }
  [[nodiscard]] const std::vector<Line>& lines() const { return lines_; }
  [[nodiscard]] const std::vector<std::string>& segments() const { return segments_; }

 private:
  // Over the cap even if a '\r' at the end turns out to be the CR of a CRLF.
  [[nodiscard]] bool over_cap() const {
    std::size_t counted = open_.size() - (open_.back() == '\r' ? 1 : 0);
    return counted > max_line_;
  }

  void close_segment(bool by_newline) {
    segments_.push_back(open_);
    if (!cut_emitted_) {
      std::string_view body = open_;
      if (by_newline) body.remove_suffix(1);
      if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
      if (by_newline || !open_.empty()) lines_.push_back({std::string(body), false});
    }
    open_.clear();
    cut_emitted_ = false;
  }

  std::size_t max_line_;
  std::string open_;
  bool cut_emitted_ = false;
  std::vector<Line> lines_;
  std::vector<std::string> segments_;
};

class Harness {
 public:
  explicit Harness(std::size_t max_line) : framer_(max_line), model_(max_line) {}

  void read(std::string_view bytes, milliseconds gap) {
    now_ += gap;
    if (timer_armed_ && now_ >= timer_due_) {
      timer_armed_ = false;
      flush();
    }
    if (bytes.empty()) return;  // time passes, nothing arrives
    fed_ += bytes;
    framer_.feed(bytes, collector());
    model_.feed(bytes);
    compare("after a read");
    // ClientSession re-arms the timer after every read that does not end a line, never past the
    // age limit of the partial line (which starts again after a '\n').
    bool mid_line = bytes.back() != '\n';
    if (!mid_line || bytes.find('\n') != std::string_view::npos) partial_since_.reset();
    timer_armed_ = mid_line;
    if (!mid_line) return;
    if (!partial_since_) partial_since_ = now_;
    milliseconds age_left = *partial_since_ + kLineTime - now_;
    timer_due_ = now_ + std::clamp(age_left, milliseconds{0}, kQuietTime);
  }

  void flush() {
    partial_since_.reset();
    framer_.flush_partial(collector());
    model_.flush();
    compare("after a flush");
  }

  void finish() {
    flush();  // the peer closed: what is pending is delivered
    std::string joined;
    for (const std::string& segment : model_.segments())
      joined += segment;
    FUZZ_CHECK(joined == fed_, "the model's segments must rebuild the input");
    FUZZ_CHECK(!framer_.has_partial(), "nothing pending after the final flush");
    for (const Line& line : lines_) {
      FUZZ_CHECK(line.text.find('\n') == std::string::npos, printable(line.text));
      FUZZ_CHECK(line.truncated ? line.text.size() == framer_.max_line()
                                : line.text.size() <= framer_.max_line(),
                 printable(line.text));
    }
  }

 private:
  LineFramer::LineHandler collector() {
    return [this](std::string_view text, bool truncated) {
      lines_.push_back({std::string(text), truncated});
    };
  }

  void compare(const char* when) {
    FUZZ_CHECK(lines_ == model_.lines(),
               fmt::format("{}: framer gave [{}], model [{}], input {}", when, describe(lines_),
                           describe(model_.lines()), printable(fed_)));
    FUZZ_CHECK(framer_.has_partial() == model_.has_partial(),
               fmt::format("{}: has_partial {} for input {}", when, framer_.has_partial(),
                           printable(fed_)));
  }

  LineFramer framer_;
  Model model_;
  std::vector<Line> lines_;
  std::string fed_;
  milliseconds now_{0};
  milliseconds timer_due_{0};
  std::optional<milliseconds> partial_since_;
  bool timer_armed_ = false;
};

}  // namespace

// Layout: one byte for max_line (1..64, small so the cap is crossed often), then reads, each a
// control byte (low 5 bits: length 0..31; high 3 bits: the gap before it) and its bytes.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  Harness harness(1 + input.take_byte() % 64);
  while (!input.empty()) {
    std::uint8_t control = input.take_byte();
    harness.read(input.take(control & 0x1Fu), kGaps[control >> 5]);
  }
  harness.finish();
}

}  // namespace mux::fuzz::line_framer
