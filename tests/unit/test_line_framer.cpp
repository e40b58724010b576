// LineFramer: bytes in, complete lines out, with a bounded line length.
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/line_framer.hpp"

namespace {

struct Line {
  std::string text;
  bool truncated;
  bool operator==(const Line& other) const {
    return text == other.text && truncated == other.truncated;
  }
};

// Collects what the framer delivers.
struct Collector {
  mux::LineFramer framer;
  std::vector<Line> lines;

  explicit Collector(std::size_t max_line) : framer(max_line) {}
  void feed(std::string_view bytes) {
    framer.feed(bytes, [this](std::string_view text, bool truncated) {
      lines.push_back({std::string(text), truncated});
    });
  }
  void flush() {
    framer.flush_partial([this](std::string_view text, bool truncated) {
      lines.push_back({std::string(text), truncated});
    });
  }
};

using Lines = std::vector<Line>;

}  // namespace

// Failed checks print the lines, with CRs made visible.
template <>
struct doctest::StringMaker<Lines> {
  static doctest::String convert(const Lines& lines) {
    std::string shown = "{";
    for (const Line& line : lines) {
      shown += " \"";
      for (char c : line.text)
        shown += c == '\r' ? std::string("\\r") : std::string(1, c);
      shown += line.truncated ? "\"(cut)" : "\"";
    }
    shown += " }";
    return shown.c_str();
  }
};

TEST_CASE("LineFramer: one line in one read") {
  Collector c(64);
  c.feed("hello\n");
  CHECK(c.lines == Lines{{"hello", false}});
  CHECK_FALSE(c.framer.has_partial());
}

TEST_CASE("LineFramer: a line split across reads") {
  Collector c(64);
  c.feed("hel");
  CHECK(c.lines.empty());
  CHECK(c.framer.has_partial());
  c.feed("lo wo");
  CHECK(c.lines.empty());
  c.feed("rld\nnext");
  CHECK(c.lines == Lines{{"hello world", false}});
  c.feed("\n");
  CHECK(c.lines == Lines{{"hello world", false}, {"next", false}});
  CHECK_FALSE(c.framer.has_partial());
}

TEST_CASE("LineFramer: a split one byte at a time") {
  Collector c(64);
  for (char byte : std::string_view("ab\ncd\n"))
    c.feed(std::string_view(&byte, 1));
  CHECK(c.lines == Lines{{"ab", false}, {"cd", false}});
}

TEST_CASE("LineFramer: several lines in one read") {
  Collector c(64);
  c.feed("one\ntwo\nthree\nfour");
  CHECK(c.lines == Lines{{"one", false}, {"two", false}, {"three", false}});
  c.feed("\n");
  CHECK(c.lines == Lines{{"one", false}, {"two", false}, {"three", false}, {"four", false}});
}

TEST_CASE("LineFramer: CRLF loses the CR; a lone CR mid-line is kept") {
  Collector c(64);
  c.feed("dos\r\nunix\nmid\rline\n\r\r\n");
  CHECK(c.lines == Lines{{"dos", false}, {"unix", false}, {"mid\rline", false}, {"\r", false}});
}

TEST_CASE("LineFramer: CRLF split between the CR and the LF") {
  Collector c(64);
  c.feed("dos\r");
  CHECK(c.lines.empty());
  c.feed("\nnext\n");
  CHECK(c.lines == Lines{{"dos", false}, {"next", false}});
}

TEST_CASE("LineFramer: empty lines are delivered") {
  Collector c(64);
  c.feed("\n\r\n\n");
  CHECK(c.lines == Lines{{"", false}, {"", false}, {"", false}});
}

TEST_CASE("LineFramer: a line exactly at the limit is not truncated") {
  Collector c(5);
  c.feed("abcde\n");
  c.feed("vwxyz\r\n");
  c.feed("12");
  c.feed("345");
  c.feed("\n");
  CHECK(c.lines == Lines{{"abcde", false}, {"vwxyz", false}, {"12345", false}});
}

TEST_CASE("LineFramer: a line at the limit whose CRLF is split across reads is not truncated") {
  Collector c(5);
  c.feed("abcde\r");
  CHECK(c.lines.empty());
  c.feed("\nnext\n");
  CHECK(c.lines == Lines{{"abcde", false}, {"next", false}});
  c.feed("abc\r");  // a lone CR inside, then a CR that ends up before the LF
  c.feed("d\r");
  c.feed("\n");
  CHECK(c.lines == Lines{{"abcde", false}, {"next", false}, {"abc\rd", false}});
}

TEST_CASE("LineFramer: a CR past the limit that is not followed by LF makes the line overlong") {
  Collector c(5);
  c.feed("abcde\r");
  c.feed("x\nok\n");
  CHECK(c.lines == Lines{{"abcde", true}, {"ok", false}});
}

TEST_CASE("LineFramer: a partial line at the limit with a trailing CR flushes whole") {
  Collector c(5);
  c.feed("abcde\r");
  c.flush();
  CHECK(c.lines == Lines{{"abcde", false}});
}

TEST_CASE("LineFramer: an overlong line is cut at the limit, its tail dropped, the next intact") {
  Collector c(5);
  SUBCASE("in one read") {
    c.feed("abcdefghij\nnext\n");
    CHECK(c.lines == Lines{{"abcde", true}, {"next", false}});
  }
  SUBCASE("across reads, tail spread over several reads") {
    c.feed("abc");
    c.feed("defg");
    CHECK(c.lines == Lines{{"abcde", true}});  // delivered as soon as the limit is passed
    c.feed("hijklmnop");
    c.feed("qrs");
    CHECK(c.lines == Lines{{"abcde", true}});  // the tail is dropped
    CHECK_FALSE(c.framer.has_partial());
    c.feed("tuv\nnext");
    c.feed("\n");
    CHECK(c.lines == Lines{{"abcde", true}, {"next", false}});
  }
  SUBCASE("one byte over the limit") {
    c.feed("abcdef\nok\n");
    CHECK(c.lines == Lines{{"abcde", true}, {"ok", false}});
  }
  SUBCASE("cut lands on a lone CR: the line is still exactly the limit") {
    c.feed("abcd\rxyz\nok\n");
    CHECK(c.lines == Lines{{"abcd\r", true}, {"ok", false}});
  }
  SUBCASE("an overlong line that ends with CRLF") {
    c.feed("abcdefg\r\nok\r\n");
    CHECK(c.lines == Lines{{"abcde", true}, {"ok", false}});
  }
}

TEST_CASE("LineFramer: no newline at all delivers nothing until flush_partial") {
  Collector c(64);
  c.feed("no newline here");
  c.feed(" and more");
  CHECK(c.lines.empty());
  CHECK(c.framer.has_partial());
  c.flush();
  CHECK(c.lines == Lines{{"no newline here and more", false}});
  CHECK_FALSE(c.framer.has_partial());
  c.flush();  // nothing pending: nothing delivered
  CHECK(c.lines.size() == 1);
}

TEST_CASE("LineFramer: flush_partial after complete lines delivers only the partial one") {
  Collector c(64);
  c.feed("done\npart");
  CHECK(c.lines == Lines{{"done", false}});
  c.flush();
  CHECK(c.lines == Lines{{"done", false}, {"part", false}});
  c.feed("fresh\n");  // the framer starts clean after a flush
  CHECK(c.lines == Lines{{"done", false}, {"part", false}, {"fresh", false}});
}

TEST_CASE("LineFramer: flush_partial ends the dropped tail of an overlong line") {
  Collector c(3);
  c.feed("abcdef");
  CHECK(c.lines == Lines{{"abc", true}});
  c.flush();  // quiet time: nothing pending, and the tail is over
  CHECK(c.lines == Lines{{"abc", true}});
  c.feed("xy\n");
  CHECK(c.lines == Lines{{"abc", true}, {"xy", false}});
}

TEST_CASE("LineFramer: a zero limit is treated as one") {
  mux::LineFramer framer(0);
  CHECK(framer.max_line() == 1);
}
