// UploadSession driven in-process: a real EventLoop and a socketpair, the client side written by
// the test. The read buffer is tiny so headers and bodies arrive split across many reads, and the
// log goes to a pipe so the exact lines can be checked.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/base/logger.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "temp_dir.hpp"
#include "upload/content_hash.hpp"
#include "upload/upload_session.hpp"
#include "upload/upload_store.hpp"

namespace {

std::string hash_of(const std::string& bytes) {
  mux::ContentHash hash;
  hash.update(bytes.data(), bytes.size());
  return hash.hex();
}

std::string ok_for(const std::string& bytes) {
  return "OK " + std::to_string(bytes.size()) + " " + hash_of(bytes) + "\n";
}

using TempDir = mux::testing::TempDir;

class Harness {
 public:
  explicit Harness(std::uint64_t max_size = 0, const mux::OutputDirectory* dir = nullptr)
      : log_(make_log_pipe()),
        logger_(mux::Verbosity::normal, log_write_.get()),
        connections_(loop_, 7),
        committer_(dir != nullptr ? std::optional<mux::Committer>(std::in_place, loop_, *dir)
                                  : std::nullopt),
        context_{loop_,         logger_,     dir, committer_ ? &*committer_ : nullptr,
                 {max_size, 0}, connections_} {
    mux::configure_for_uploads(connections_);
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    client_.reset(fds[0]);
    session_ = std::make_unique<mux::UploadSession>(
        context_, mux::Fd(fds[1]), 3, "peer:1", [this](mux::UploadSession&) { finished_ = true; });
  }

  // Writes each piece separately and lets the loop run in between.
  void send_in_pieces(const std::string& bytes, std::size_t piece) {
    for (std::size_t at = 0; at < bytes.size(); at += piece) {
      std::string part = bytes.substr(at, piece);
      REQUIRE(::write(client_.get(), part.data(), part.size()) ==
              static_cast<ssize_t>(part.size()));
      loop_.run_once(std::chrono::milliseconds{0});
    }
  }
  void send(const std::string& bytes) { send_in_pieces(bytes, 1000); }
  void half_close() { ::shutdown(client_.get(), SHUT_WR); }

  // Runs the loop until the session has finished (or a bounded number of rounds passed).
  bool run_until_finished() {
    for (int round = 0; round < 200 && !finished_; ++round)
      loop_.run_once(std::chrono::milliseconds{10});
    return finished_;
  }
  void run_a_little() {
    for (int round = 0; round < 5; ++round)
      loop_.run_once(std::chrono::milliseconds{5});
  }

  // What the session has replied so far.
  std::string reply() {
    char chunk[256];
    while (true) {
      ssize_t got = ::read(client_.get(), chunk, sizeof chunk);
      if (got <= 0) break;
      reply_.append(chunk, static_cast<std::size_t>(got));
    }
    return reply_;
  }

  // The log lines written so far, timestamps cut off.
  std::vector<std::string> log() {
    logger_.flush();
    char chunk[4096];
    std::string text;
    ssize_t got = 0;
    while ((got = ::read(log_.get(), chunk, sizeof chunk)) > 0)
      text.append(chunk, static_cast<std::size_t>(got));
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line))
      log_lines_.push_back(line.substr(line.find(' ', 11) + 1));
    return log_lines_;
  }

  mux::UploadSession& session() { return *session_; }
  // Serves as a fork-mode parent does: the session ends at its header, handed to a "child" that
  // is only counted here (the connection then forgotten, not closed: the socket stays open).
  int& count_hand_offs() {
    context_.hand_off = [this](mux::UploadSession&) {
      ++header_reports_;
      return true;
    };
    return header_reports_;
  }
  [[nodiscard]] bool finished() const { return finished_; }

 private:
  mux::Fd make_log_pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
    log_write_.reset(fds[1]);
    return mux::Fd(fds[0]);
  }

  mux::Fd log_write_;
  mux::Fd log_;
  mux::EventLoop loop_;
  mux::Logger logger_;
  mux::ConnectionContext connections_;
  std::optional<mux::Committer> committer_;
  mux::UploadContext context_;
  mux::Fd client_;
  std::unique_ptr<mux::UploadSession> session_;
  bool finished_ = false;
  int header_reports_ = 0;
  std::string reply_;
  std::vector<std::string> log_lines_;
};

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

TEST_CASE("a header split into single bytes, then the body, gets OK at once") {
  Harness harness;
  harness.send_in_pieces("MUXUP/1 11 notes.txt\nhello world", 1);
  harness.run_a_little();
  CHECK(harness.reply() == ok_for("hello world"));
  CHECK_FALSE(harness.finished());  // waits for the half-close
  harness.half_close();
  CHECK(harness.run_until_finished());
  std::vector<std::string> log = harness.log();
  REQUIRE(log.size() == 1);
  CHECK(starts_with(log[0], "Received 11 bytes from [Client 3] peer:1 in "));
}

TEST_CASE("bytes after the announced size are not part of the upload") {
  Harness harness;
  harness.send("MUXUP/1 5 x\nhelloEXTRA");
  harness.half_close();
  CHECK(harness.run_until_finished());
  CHECK(harness.reply() == ok_for("hello"));
}

TEST_CASE("a stream that does not start with the magic is a raw upload until EOF") {
  for (std::string body : {std::string("hi"), std::string("MUX"), std::string("MUXUP/1"),
                           std::string("MUXUP/2 5 x\nhello"), std::string(100, 'z')}) {
    CAPTURE(body);
    Harness harness;
    harness.send_in_pieces(body, 3);
    harness.half_close();
    CHECK(harness.run_until_finished());
    CHECK(harness.reply() == ok_for(body));
  }
}

TEST_CASE(
    "a fork-mode parent hands over at the header's newline; a raw upload after 1 KiB or at its "
    "end") {
  {
    Harness harness;
    int& hand_offs = harness.count_hand_offs();
    harness.send_in_pieces("MUXUP/1 11 notes.txt", 4);
    harness.run_a_little();
    CHECK(hand_offs == 0);
    harness.send("\nhello");
    harness.run_a_little();
    CHECK(hand_offs == 1);
    CHECK(harness.run_until_finished());  // the child has it now
    CHECK(harness.reply().empty());       // and the child answers
  }
  {
    Harness harness;
    int& hand_offs = harness.count_hand_offs();
    harness.send_in_pieces(std::string(mux::kRawHeaderBytes - 1, 'r'), 100);
    for (int i = 0; i < 20; ++i)  // 7-byte reads: every byte read, with room to spare
      harness.run_a_little();
    CHECK(hand_offs == 0);  // a raw upload's first byte is no proof: a slot holder sends one too
    harness.send("r");
    harness.run_a_little();
    CHECK(hand_offs == 1);
  }
  {
    Harness harness;
    int& hand_offs = harness.count_hand_offs();
    harness.send("tiny");
    harness.half_close();
    CHECK(harness.run_until_finished());
    CHECK(hand_offs == 1);  // a raw upload smaller than that: its end
    CHECK(harness.reply().empty());
  }
  {
    Harness harness;
    int& hand_offs = harness.count_hand_offs();
    harness.send("MUXUP/1 x y\n");  // a bad header is refused here, never handed over
    harness.run_a_little();
    CHECK(hand_offs == 0);
    CHECK(harness.reply() == "ERR bad header: size is not a number\n");
  }
  {
    Harness harness;
    int& hand_offs = harness.count_hand_offs();
    harness.send("GET / HTTP/1.1\r\n\r\n");  // refused as single mode refuses it
    harness.run_a_little();
    CHECK(hand_offs == 0);
    CHECK(starts_with(harness.reply(), "ERR "));
  }
}

TEST_CASE("a connection that sends nothing is not an upload") {
  Harness harness;
  harness.half_close();
  CHECK(harness.run_until_finished());
  CHECK(harness.reply().empty());
  CHECK(harness.log().empty());
}

TEST_CASE("bad headers are refused with the reason, logged as incomplete") {
  struct Case {
    std::string sent;
    std::string reply;
  };
  for (const Case& c : {
           Case{"MUXUP/1 abc x\nhello", "ERR bad header: size is not a number\n"},
           Case{"MUXUP/1 5\nhello", "ERR bad header: missing name\n"},
           Case{"MUXUP/1 5 x", "ERR bad header: the connection ended inside the header line\n"},
           Case{"MUXUP/1 5 " + std::string(5000, 'a') + "\nhello",
                "ERR bad header: line longer than 4096 bytes\n"},
       }) {
    CAPTURE(c.sent.substr(0, 40));
    Harness harness;
    harness.send(c.sent);
    harness.half_close();
    CHECK(harness.run_until_finished());
    CHECK(harness.reply() == c.reply);
    std::vector<std::string> log = harness.log();
    REQUIRE(log.size() == 1);
    CHECK(log[0].find(": incomplete (bad header: ") != std::string::npos);
  }
}

TEST_CASE("a header line of exactly 4096 bytes with its newline is accepted") {
  std::string line = "MUXUP/1 0 ";
  line += std::string(4095 - line.size(), 'n');
  Harness accepted;
  accepted.send(line + "\n");
  accepted.half_close();
  CHECK(accepted.run_until_finished());
  CHECK(accepted.reply() == ok_for(""));

  Harness refused;
  refused.send(line + "n\n");
  refused.half_close();
  CHECK(refused.run_until_finished());
  CHECK(refused.reply() == "ERR bad header: line longer than 4096 bytes\n");
}

TEST_CASE("an upload that ends early is incomplete") {
  Harness harness;
  harness.send("MUXUP/1 10 x\nhello");
  harness.half_close();
  CHECK(harness.run_until_finished());
  CHECK(harness.reply() == "ERR incomplete: only 5 of 10 bytes arrived\n");
  std::vector<std::string> log = harness.log();
  REQUIRE(log.size() == 1);
  CHECK(starts_with(log[0], "Received 5 bytes from [Client 3] peer:1 in "));
  CHECK(log[0].find(" s: incomplete (only 5 of 10 bytes arrived)") != std::string::npos);
}

TEST_CASE("--max-size refuses a header at once and cuts a raw stream off") {
  Harness header(5);
  header.send("MUXUP/1 6 x\n");
  header.run_a_little();  // no EOF needed: refused at once
  CHECK(header.reply() == "ERR too large: 6 bytes, the limit is 5\n");
  CHECK_FALSE(header.finished());  // lingering: the client may still be sending
  header.half_close();
  CHECK(header.run_until_finished());

  Harness at_limit(5);
  at_limit.send("MUXUP/1 5 x\nhello");
  at_limit.half_close();
  CHECK(at_limit.run_until_finished());
  CHECK(at_limit.reply() == ok_for("hello"));

  Harness raw(5);
  raw.send("hello!");
  raw.run_a_little();
  CHECK(raw.reply() == "ERR too large: more than the limit of 5 bytes\n");
  raw.send("more bytes after the refusal are drained, not a reset");
  raw.half_close();
  CHECK(raw.run_until_finished());

  Harness raw_at_limit(5);
  raw_at_limit.send("hello");
  raw_at_limit.half_close();
  CHECK(raw_at_limit.run_until_finished());
  CHECK(raw_at_limit.reply() == ok_for("hello"));
}

TEST_CASE("abort ends an upload in flight, and only closes an idle connection") {
  Harness busy;
  busy.send("MUXUP/1 10 x\nhel");
  CHECK(busy.session().in_flight());
  busy.session().abort("shutting down");
  busy.run_a_little();
  CHECK(busy.reply() == "ERR shutting down\n");
  busy.half_close();
  CHECK(busy.run_until_finished());

  Harness idle;
  CHECK_FALSE(idle.session().in_flight());
  idle.session().abort("shutting down");
  idle.half_close();
  CHECK(idle.run_until_finished());
  CHECK(idle.reply().empty());
  CHECK(idle.log().empty());
}

TEST_CASE("with an output directory, complete uploads are saved and nothing else is left") {
  TempDir temp;
  mux::OutputDirectory dir(temp.path);
  {
    Harness first(0, &dir);
    first.send("MUXUP/1 5 ../report.txt\nhello");
    first.half_close();
    CHECK(first.run_until_finished());
    CHECK(first.reply() == ok_for("hello"));
  }
  {
    Harness second(0, &dir);
    second.send("MUXUP/1 6 report.txt\nhello2");
    second.half_close();
    CHECK(second.run_until_finished());
  }
  {
    Harness broken(0, &dir);
    broken.send("MUXUP/1 6 report.txt\nhel");
    broken.half_close();
    CHECK(broken.run_until_finished());
  }
  {
    Harness raw(0, &dir);
    raw.send("raw bytes");
    raw.half_close();
    CHECK(raw.run_until_finished());
  }
  CHECK(temp.entries() == std::set<std::string>{"report.txt", "report.txt.1", "upload-3.bin"});
  CHECK(temp.read("report.txt") == "hello");
  CHECK(temp.read("report.txt.1") == "hello2");
  CHECK(temp.read("upload-3.bin") == "raw bytes");
}

TEST_CASE("files in the output directory are named with one slash") {
  TempDir temp;
  CHECK(mux::OutputDirectory(temp.path).path_of("a.txt") == temp.path + "/a.txt");
  CHECK(mux::OutputDirectory(temp.path + "/").path_of("a.txt") == temp.path + "/a.txt");
}

TEST_CASE("an output directory that does not exist is an error naming the flag") {
  CHECK_THROWS_WITH(mux::OutputDirectory("/nonexistent/mux-dir"),
                    "--output-dir /nonexistent/mux-dir: No such file or directory");
}
