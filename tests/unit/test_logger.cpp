// Logger: the bounded in-memory queue in front of a stdout that may stall. When it overflows,
// lines are dropped, counted, and the count is written once writing resumes.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/fd.hpp"
#include "core/logger.hpp"

namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);)
    lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("logger: a stalled stdout drops lines, counts them and says so once it resumes") {
  int ends[2];
  REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
  mux::Fd read_end(ends[0]);
  mux::Fd write_end(ends[1]);
  // Nobody reads the pipe yet: the writer thread blocks once it is full, the queue fills to
  // kMaxQueuedBytes and the rest is dropped. 24 MiB of lines is several times both.
  constexpr std::size_t kLines = 200000;
  const std::string padding(90, 'p');
  std::string output;
  std::thread reader;
  {
    mux::Logger logger(mux::Verbosity::normal, write_end.get());
    for (std::size_t i = 0; i < kLines; ++i)
      logger.info("line {} {}", i, padding);
    reader = std::thread([&] {
      char buffer[65536];
      ssize_t n = 0;
      while ((n = ::read(read_end.get(), buffer, sizeof buffer)) > 0)
        output.append(buffer, static_cast<std::size_t>(n));
    });
    logger.flush();
    logger.info("after the stall");
  }  // the destructor writes what is queued and joins the writer thread
  write_end.reset();
  reader.join();

  const std::regex numbered(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} line (\d+) p+$)");
  const std::regex dropped(
      R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \((\d+) log lines dropped: stdout was not keeping up\)$)");
  std::vector<std::string> lines = split_lines(output);
  REQUIRE(lines.size() >= 2);
  CHECK(lines.back().ends_with(" after the stall"));
  lines.pop_back();
  // Kept lines keep their order, and a notice right after a kept line counts exactly the lines
  // missing before the next kept one.
  std::size_t next = 0;       // the number the next kept line has if nothing was dropped
  std::size_t announced = 0;  // drops announced since the last kept line
  std::size_t kept = 0;
  std::size_t notices = 0;
  for (const std::string& line : lines) {
    INFO("line: ", line);
    std::smatch match;
    if (std::regex_match(line, match, numbered)) {
      CHECK(std::stoul(match[1]) == next + announced);
      next = std::stoul(match[1]) + 1;
      announced = 0;
      ++kept;
    } else {
      REQUIRE(std::regex_match(line, match, dropped));
      announced += std::stoul(match[1]);
      ++notices;
    }
  }
  CHECK(next + announced == kLines);  // drops after the last kept line are announced too
  CHECK(notices >= 1);
  CHECK(kept < kLines);
  INFO("kept ", kept, " of ", kLines, " in ", notices, " notices");
  CHECK(kept > 0);
}
