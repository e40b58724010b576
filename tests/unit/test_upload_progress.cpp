// upload-client's progress output: the terminal line, the "Sent N MiB" steps and the summary.
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
  CHECK(mux::progress_step_lines(0, 10 * kMiB) == Lines{"Sent 10 MiB"});
  CHECK(mux::progress_step_lines(5 * kMiB, 35 * kMiB) ==
        Lines{"Sent 10 MiB", "Sent 20 MiB", "Sent 30 MiB"});
  CHECK(mux::progress_step_lines(10 * kMiB, 10 * kMiB).empty());
  CHECK(mux::progress_step_lines(10 * kMiB, 20 * kMiB - 1).empty());
}

TEST_CASE("the clock form of elapsed time and ETA") {
  CHECK(mux::format_clock(0) == "0:00");
  CHECK(mux::format_clock(5.4) == "0:05");
  CHECK(mux::format_clock(62) == "1:02");
  CHECK(mux::format_clock(3723) == "1:02:03");
  CHECK(mux::format_clock(-1) == "-:--");
}

TEST_CASE("the terminal line: percent, bar, bytes, IEC rate, elapsed, ETA, fitted to the width") {
  using mux::format_progress_line;
  mux::ProgressSnapshot half{512 * kMiB, 1024 * kMiB, 256.0 * kMiB, 2.0, 0, {}};
  // Wide: everything, the bar taking what is left (79 columns: never the last one).
  std::string wide = format_progress_line(half, 80);
  CHECK(wide.size() == 79);
  CHECK(wide.starts_with(" 50% [====="));
  CHECK(wide.ends_with("] 512.0 MiB / 1.0 GiB 256.0 MiB/s 0:02 ETA 0:02"));
  // Narrower: the bar goes first, then elapsed, the total, ETA, the rate, the bytes.
  CHECK(format_progress_line(half, 60) == " 50% 512.0 MiB / 1.0 GiB 256.0 MiB/s 0:02 ETA 0:02");
  CHECK(format_progress_line(half, 50) == " 50% 512.0 MiB / 1.0 GiB 256.0 MiB/s ETA 0:02");
  CHECK(format_progress_line(half, 45) == " 50% 512.0 MiB 256.0 MiB/s ETA 0:02");
  CHECK(format_progress_line(half, 35) == " 50% 512.0 MiB 256.0 MiB/s");
  CHECK(format_progress_line(half, 20) == " 50% 512.0 MiB");
  CHECK(format_progress_line(half, 6) == " 50%");
  CHECK(format_progress_line(half, 3) == " 5");
  for (std::size_t width = 1; width < 120; ++width)
    CHECK(format_progress_line(half, width).size() < std::max<std::size_t>(width, 1));
  // Done, empty, a stream of unknown length (standard input from a pipe): no bar, no ETA.
  CHECK(format_progress_line({100, 100, 5.0 * kMiB, 1.0, 0, {}}, 40) ==
        "100% 100 B / 100 B 5.0 MiB/s 0:01");
  CHECK(format_progress_line({0, 0, 0, 0, 0, {}}, 30) == "100% 0 B / 0 B 0 B/s 0:00");
  CHECK(format_progress_line({3 * kMiB, std::nullopt, 2.0 * kMiB, 65, 0, {}}, 80) ==
        "3.0 MiB 2.0 MiB/s 1:05");
}

TEST_CASE("a stall is shown instead of a decaying rate, and stays on narrow terminals") {
  using mux::format_progress_line;
  mux::ProgressSnapshot stalled{512 * kMiB, 1024 * kMiB, 1.0 * kMiB, 30.0, 7.0, {}};
  CHECK(format_progress_line(stalled, 80).ends_with("] 512.0 MiB / 1.0 GiB stalled 0:07 0:30"));
  CHECK(format_progress_line(stalled, 50) == " 50% 512.0 MiB / 1.0 GiB stalled 0:07 0:30");
  CHECK(format_progress_line(stalled, 30) == " 50% 512.0 MiB stalled 0:07");
  CHECK(format_progress_line(stalled, 20) == " 50% stalled 0:07");
  stalled.stalled = 2.9;  // moving again, or not for long: the rate
  CHECK(format_progress_line(stalled, 30) == " 50% 512.0 MiB 1.0 MiB/s");
}

TEST_CASE("the summary line") {
  CHECK(mux::format_upload_summary(1000, 2.0, "abc") ==
        "Sent 1000 bytes in 2.000 s (500 B/s), verified abc");
  CHECK(mux::format_upload_summary(100 * kMiB, 2.0, "abc") ==
        "Sent 104857600 bytes in 2.000 s (50.0 MiB/s), verified abc");
  CHECK(mux::format_upload_summary(1000, 2.0, "abc", "notes.txt.1") ==
        "Sent 1000 bytes in 2.000 s (500 B/s), verified abc, saved as notes.txt.1");
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
  CHECK(read_back(out) == "Sent 10 MiB\nSent 20 MiB\nSent 30 MiB\nSent 40 MiB\ndone\n");
  std::fclose(out);
}

TEST_CASE("a count that starts lower again (a new try, the server's first ACK) repeats no line") {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  mux::ProgressDisplay display(mux::ProgressDisplay::Style::lines, 40 * kMiB, out);
  display.update(12 * kMiB, 0.1);
  display.start_at(1 * kMiB, 0.2);  // the server holds only 1 MiB of what was sent
  display.update(15 * kMiB, 0.3);
  display.update(21 * kMiB, 0.4);
  display.start_at(25 * kMiB, 0.5);  // resumed past a step: not printed
  display.update(35 * kMiB, 0.6);
  display.finish("done");
  CHECK(read_back(out) == "Sent 10 MiB\nSent 20 MiB\nSent 30 MiB\ndone\n");
  std::fclose(out);
}

TEST_CASE("on a terminal the line is redrawn in place and cleared before the summary") {
  std::FILE* out = std::tmpfile();
  REQUIRE(out != nullptr);
  mux::ProgressDisplay display(mux::ProgressDisplay::Style::terminal, 100, out);
  display.update(50, 0.5);
  display.redraw(1.0);
  display.finish("done");
  // Not a terminal (a temporary file): the usual 80 columns.
  CHECK(display.width() == 80);
  std::string drawn = read_back(out);
  CHECK(drawn.starts_with("\r 50% [=="));
  CHECK(drawn.ends_with("] 50 B / 100 B 50 B/s 0:01 ETA 0:01\x1b[K\r\x1b[Kdone\n"));
  CHECK(drawn.size() == 1 + 79 + 3 + 4 + 5);
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

TEST_CASE("progress: several files show the count first, rsync --info=progress2 style") {
  mux::ProgressSnapshot batch{1 * kMiB, 4 * kMiB, 0, 1.0, 0, std::make_pair(12ULL, 60ULL)};
  std::string line = mux::format_progress_line(batch, 200);
  CHECK(line.starts_with("12/60 files,"));
  CHECK(line.find("1.0 MiB of 4.0 MiB") != std::string::npos);
  CHECK(mux::format_batch_summary(60, 3 * kMiB, 2.0, 0) ==
        "Sent 60 files (3.0 MiB) in 2.000 s (1.5 MiB/s), each verified");
  CHECK(mux::format_batch_summary(1, 0, 0, 2) ==
        "Sent 1 file (0 B) in 0.000 s (0 B/s), each verified, 2 already there from an earlier run");
}
