// upload-client's progress output: the terminal line, the "Sent N MB" steps and the summary.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "upload/progress_display.hpp"

namespace {

constexpr std::uint64_t kMiB = 1 << 20;

std::string read_back(std::FILE* file) {
  std::rewind(file);
  std::string text;
  char chunk[256];
  std::size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0)
    text.append(chunk, got);
  return text;
}

}  // namespace

TEST_CASE("one Sent line for each 10 MiB passed") {
  using Lines = std::vector<std::string>;
  CHECK(mux::progress_step_lines(0, 10 * kMiB - 1).empty());
  CHECK(mux::progress_step_lines(0, 10 * kMiB) == Lines{"Sent 10 MB"});
  CHECK(mux::progress_step_lines(5 * kMiB, 35 * kMiB) ==
        Lines{"Sent 10 MB", "Sent 20 MB", "Sent 30 MB"});
  CHECK(mux::progress_step_lines(10 * kMiB, 10 * kMiB).empty());
  CHECK(mux::progress_step_lines(10 * kMiB, 20 * kMiB - 1).empty());
}

TEST_CASE("the terminal line shows percent, bytes, rate and ETA") {
  CHECK(mux::format_progress_line(512 * kMiB, 1024 * kMiB, 1e9) ==
        " 50%  512.0 MiB of 1.0 GiB  1.00 GB/s  ETA 1 s");
  CHECK(mux::format_progress_line(50, 100, 0) == " 50%  50 B of 100 B  0 B/s");
  CHECK(mux::format_progress_line(0, 0, 0) == "100%  0 B of 0 B  0 B/s");
  CHECK(mux::format_progress_line(100, 100, 5e6) == "100%  100 B of 100 B  5.0 MB/s");
  CHECK(mux::format_progress_line(3 * kMiB, std::nullopt, 2e6) == "3.0 MiB  2.0 MB/s");
}

TEST_CASE("the summary line") {
  CHECK(mux::format_upload_summary(1000, 2.0, "abc") ==
        "Sent 1000 bytes in 2.000 s (500 B/s), verified abc");
}

TEST_CASE("when not a terminal, steps are printed as they are passed and no escape codes") {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  mux::ProgressDisplay display(mux::ProgressDisplay::Style::lines, 40 * kMiB, out);
  display.update(9 * kMiB, 0.1);
  display.redraw(0.1);
  display.update(25 * kMiB, 0.2);
  display.update(40 * kMiB, 0.3);
  display.finish("done");
  CHECK(read_back(out) == "Sent 10 MB\nSent 20 MB\nSent 30 MB\nSent 40 MB\ndone\n");
  std::fclose(out);
}

TEST_CASE("on a terminal the line is redrawn in place and cleared before the summary") {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  mux::ProgressDisplay display(mux::ProgressDisplay::Style::terminal, 100, out);
  display.update(50, 0.5);
  display.redraw(1.0);
  display.finish("done");
  CHECK(read_back(out) == "\r 50%  50 B of 100 B  50 B/s  ETA 1 s\x1b[K\r\x1b[Kdone\n");
  std::fclose(out);
}

TEST_CASE("quiet prints nothing") {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  mux::ProgressDisplay display(mux::ProgressDisplay::Style::silent, 100 * kMiB, out);
  display.update(100 * kMiB, 1);
  display.redraw(1);
  display.finish("done");
  CHECK(read_back(out).empty());
  std::fclose(out);
}
