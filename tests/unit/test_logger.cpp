// Logger: the bounded in-memory queue in front of a stdout that may stall. When it overflows,
// lines are dropped, counted, and the count is written once writing resumes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cstddef>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/base/logger.hpp"
#include "core/loop/fd.hpp"

namespace {

// "2026-11-29T17:30:00.123+00:00 " (the log's UTC timestamp and its space) stripped, or nullopt. By
// hand, not with std::regex: g++ 12 under -O2 -fsanitize=address warns inside <regex> (a false
// -Wmaybe-uninitialized), which -Werror turns into a failed CI build.
std::optional<std::string> without_timestamp(const std::string& line) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.ddd+00:00 ";
  if (line.size() < shape.size()) return std::nullopt;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    bool digit = std::isdigit(static_cast<unsigned char>(line[i])) != 0;
    if (shape[i] == 'd' ? !digit : line[i] != shape[i]) return std::nullopt;
  }
  return line.substr(shape.size());
}

// The leading decimal number of `text` (at least one digit) and what follows it.
std::optional<std::pair<std::size_t, std::string>> leading_number(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])) != 0)
    ++digits;
  if (digits == 0) return std::nullopt;
  return std::make_pair(std::stoul(text.substr(0, digits)), text.substr(digits));
}

// "line N ppp...": N.
std::optional<std::size_t> numbered_line(const std::string& line) {
  std::optional<std::string> text = without_timestamp(line);
  if (!text || !text->starts_with("line ")) return std::nullopt;
  auto number = leading_number(text->substr(5));
  if (!number) return std::nullopt;
  const std::string& rest = number->second;
  if (rest.size() < 2 || rest[0] != ' ' || rest.find_first_not_of('p', 1) != std::string::npos)
    return std::nullopt;
  return number->first;
}

// "warning: N log lines dropped: stdout was not keeping up": N.
std::optional<std::size_t> dropped_notice(const std::string& line) {
  const std::string tag = "warning: ";
  std::optional<std::string> text = without_timestamp(line);
  if (!text || !text->starts_with(tag)) return std::nullopt;
  auto number = leading_number(text->substr(tag.size()));
  if (!number || number->second != " log lines dropped: stdout was not keeping up")
    return std::nullopt;
  return number->first;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);)
    lines.push_back(line);
  return lines;
}

// What a stalled stdout produced: every line logged with logger.info("line {} ppp..."), in
// order, with gaps counted exactly by the notices. Returns how many notices there were.
std::size_t check_numbered_with_drops(const std::vector<std::string>& lines, std::size_t logged) {
  // Kept lines keep their order, and a notice right after a kept line counts exactly the lines
  // missing before the next kept one.
  std::size_t next = 0;       // the number the next kept line has if nothing was dropped
  std::size_t announced = 0;  // drops announced since the last kept line
  std::size_t kept = 0;
  std::size_t notices = 0;
  for (const std::string& line : lines) {
    INFO("line: ", line);
    if (std::optional<std::size_t> number = numbered_line(line)) {
      CHECK(*number == next + announced);
      next = *number + 1;
      announced = 0;
      ++kept;
    } else {
      std::optional<std::size_t> count = dropped_notice(line);
      REQUIRE(count.has_value());
      announced += *count;
      ++notices;
    }
  }
  CHECK(next + announced == logged);  // drops after the last kept line are announced too
  CHECK(kept < logged);
  INFO("kept ", kept, " of ", logged, " in ", notices, " notices");
  CHECK(kept > 0);
  return notices;
}

// A pipe nobody reads until start() is called; then a thread reads it to the end.
class StalledPipe {
 public:
  StalledPipe() {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    read_end_ = mux::Fd(ends[0]);
    write_end_ = mux::Fd(ends[1]);
  }
  int write_fd() const { return write_end_.get(); }
  void start_reading() {
    reader_ = std::thread([this] {
      char buffer[65536];
      ssize_t n = 0;
      while ((n = ::read(read_end_.get(), buffer, sizeof buffer)) > 0)
        output_.append(buffer, static_cast<std::size_t>(n));
    });
  }
  // Closes the write end (the logger must be gone) and returns everything that was written.
  std::vector<std::string> finish() {
    write_end_.reset();
    reader_.join();
    return split_lines(output_);
  }

 private:
  mux::Fd read_end_;
  mux::Fd write_end_;
  std::thread reader_;
  std::string output_;
};

// Nobody reads the pipe at first: the writer thread blocks once it is full, the queue fills to
// kMaxQueuedBytes and the rest is dropped. 24 MiB of lines is several times both.
constexpr std::size_t kStallLines = 200000;
const std::string kPadding(90, 'p');

}  // namespace

TEST_CASE("logger: a stalled stdout drops lines, counts them and says so once it resumes") {
  StalledPipe pipe;
  {
    mux::Logger logger(mux::Verbosity::normal, pipe.write_fd());
    for (std::size_t i = 0; i < kStallLines; ++i)
      logger.info("line {} {}", i, kPadding);
    pipe.start_reading();
    logger.flush();
    logger.info("after the stall");
  }  // the destructor writes what is queued and joins the writer thread
  std::vector<std::string> lines = pipe.finish();
  REQUIRE(lines.size() >= 2);
  CHECK(lines.back().ends_with(" after the stall"));
  lines.pop_back();
  CHECK(check_numbered_with_drops(lines, kStallLines) >= 1);
}

TEST_CASE("logger: the drop count comes out at exit although no line follows the drops") {
  StalledPipe pipe;
  {
    mux::Logger logger(mux::Verbosity::normal, pipe.write_fd());
    for (std::size_t i = 0; i < kStallLines; ++i)
      logger.info("line {} {}", i, kPadding);
    pipe.start_reading();
  }  // exit: the last lines logged were dropped, and nothing was logged after them
  std::vector<std::string> lines = pipe.finish();
  REQUIRE(!lines.empty());
  CHECK(dropped_notice(lines.back()).has_value());  // the last lines were the dropped ones
  CHECK(check_numbered_with_drops(lines, kStallLines) >= 1);
}

TEST_CASE("logger: a line longer than the whole queue is dropped and counted at once") {
  const std::string huge(mux::Logger::kMaxQueuedBytes + 1, 'x');
  SUBCASE("flush() returns once the count itself is written, before any later line") {
    StalledPipe pipe;
    pipe.start_reading();
    {
      mux::Logger logger(mux::Verbosity::normal, pipe.write_fd());
      logger.info("{}", huge);
      logger.flush();
      logger.info("after");
    }
    std::vector<std::string> lines = pipe.finish();
    REQUIRE(lines.size() == 2);
    CHECK(dropped_notice(lines[0]) == std::optional<std::size_t>(1));
    CHECK(lines[1].ends_with(" after"));
  }
  SUBCASE("with nothing logged after it, the count comes out at exit") {
    StalledPipe pipe;
    pipe.start_reading();
    { mux::Logger(mux::Verbosity::normal, pipe.write_fd()).info("{}", huge); }
    std::vector<std::string> lines = pipe.finish();
    REQUIRE(lines.size() == 1);
    CHECK(dropped_notice(lines[0]) == std::optional<std::size_t>(1));
  }
}
