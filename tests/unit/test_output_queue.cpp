// OutputQueue and SocketWriter against real non-blocking sockets (AF_UNIX socketpairs) whose send
// buffer is made small, so the kernel takes only part of a large write and EAGAIN is real.
#include <doctest/doctest.h>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/byte_stream.hpp"
#include "core/event_loop.hpp"
#include "core/fd.hpp"
#include "core/net.hpp"
#include "core/output_queue.hpp"

namespace {

using Status = mux::OutputQueue::Status;

struct SocketPair {
  mux::Fd writer;  // the side under test
  mux::Fd reader;  // the peer
};

// Non-blocking pair; the writer's send buffer is shrunk to the kernel minimum (a few KiB).
SocketPair make_pair(int type = SOCK_STREAM) {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  SocketPair pair{mux::Fd(fds[0]), mux::Fd(fds[1])};
  int small = 4096;
  REQUIRE(::setsockopt(pair.writer.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  return pair;
}

// Everything the peer can read right now.
std::string read_available(int fd) {
  std::string received;
  char chunk[65536];
  while (true) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    received.append(chunk, static_cast<std::size_t>(n));
  }
  return received;
}

// Distinct bytes at every position, so a reordering or a repeat cannot go unnoticed.
std::string pattern(std::size_t length, unsigned seed) {
  std::string text(length, '\0');
  unsigned state = seed;
  for (char& c : text) {
    state = state * 1103515245u + 12345u;
    c = static_cast<char>('a' + (state >> 16) % 26);
  }
  return text;
}

// Writes and reads alternately until the queue is drained; a bounded number of rounds.
std::string drain_through(mux::OutputQueue& queue, const SocketPair& pair) {
  std::string received;
  for (int round = 0; round < 100000 && !queue.empty(); ++round) {
    int error = -1;
    Status status = queue.write_to(pair.writer.get(), error);
    REQUIRE(status != Status::failed);
    CHECK(error == 0);
    received += read_available(pair.reader.get());
  }
  REQUIRE(queue.empty());
  received += read_available(pair.reader.get());
  return received;
}

}  // namespace

TEST_CASE("OutputQueue: everything fits: drained at once") {
  SocketPair pair = make_pair();
  mux::OutputQueue queue;
  queue.push("hello ");
  queue.push(mux::make_block("world\n"));
  CHECK(queue.bytes() == 12);
  int error = -1;
  CHECK(queue.write_to(pair.writer.get(), error) == Status::drained);
  CHECK(error == 0);
  CHECK(queue.empty());
  CHECK(read_available(pair.reader.get()) == "hello world\n");
  // Nothing queued: drained without writing.
  CHECK(queue.write_to(pair.writer.get(), error) == Status::drained);
  CHECK(read_available(pair.reader.get()).empty());
}

TEST_CASE("OutputQueue: empty and null blocks are ignored") {
  mux::OutputQueue queue;
  queue.push("");
  queue.push(mux::Block());
  queue.push(mux::make_block(""));
  CHECK(queue.empty());
  CHECK(queue.bytes() == 0);
}

TEST_CASE("OutputQueue: a partial write keeps the rest, in order, until the peer drains") {
  SocketPair pair = make_pair();
  mux::OutputQueue queue;
  std::string expected;
  for (unsigned i = 0; i < 3; ++i) {
    std::string part = pattern(300000 + i * 1000, i + 1);
    expected += part;
    queue.push(part);
  }
  REQUIRE(queue.bytes() == expected.size());

  int error = -1;
  CHECK(queue.write_to(pair.writer.get(), error) == Status::blocked);
  CHECK(error == 0);
  std::size_t first_left = queue.bytes();
  CHECK(first_left > 0);
  CHECK(first_left < expected.size());  // the kernel took some, not all

  // EAGAIN with nothing taken: the queue is unchanged.
  CHECK(queue.write_to(pair.writer.get(), error) == Status::blocked);
  CHECK(queue.bytes() == first_left);

  std::string received = drain_through(queue, pair);
  CHECK(received.size() == expected.size());
  CHECK(received == expected);
}

TEST_CASE("OutputQueue: more blocks than one writev takes") {
  SocketPair pair = make_pair();
  mux::OutputQueue queue;
  std::string expected;
  for (int i = 0; i < 5000; ++i) {
    std::string line = "line " + std::to_string(i) + "\n";
    expected += line;
    queue.push(line);
  }
  CHECK(drain_through(queue, pair) == expected);
}

TEST_CASE("OutputQueue: a block shared by several queues is released as each one writes it") {
  mux::Block line = mux::make_block(pattern(1000, 7));
  std::vector<SocketPair> pairs;
  std::vector<mux::OutputQueue> queues(3);
  for (std::size_t i = 0; i < queues.size(); ++i) {
    pairs.push_back(make_pair());
    queues[i].push(line);
  }
  CHECK(line.use_count() == 4);  // this test's copy plus one per queue: no copies of the bytes

  for (std::size_t i = 0; i < queues.size(); ++i) {
    int error = -1;
    CHECK(queues[i].write_to(pairs[i].writer.get(), error) == Status::drained);
    CHECK(line.use_count() == static_cast<long>(3 - i));
    CHECK(read_available(pairs[i].reader.get()) == *line);
  }
  CHECK(line.use_count() == 1);
}

TEST_CASE("OutputQueue: a shared block is held until its last byte is written") {
  mux::Block big = mux::make_block(pattern(400000, 9));
  SocketPair slow = make_pair();
  SocketPair fast = make_pair();
  mux::OutputQueue slow_queue;
  mux::OutputQueue fast_queue;
  slow_queue.push(big);
  fast_queue.push("header:");
  fast_queue.push(big);
  CHECK(big.use_count() == 3);

  int error = -1;
  REQUIRE(slow_queue.write_to(slow.writer.get(), error) == Status::blocked);
  CHECK(big.use_count() == 3);  // partly written: still needed

  std::string fast_received = drain_through(fast_queue, fast);
  CHECK(fast_received == "header:" + *big);
  CHECK(big.use_count() == 2);

  std::string slow_received = read_available(slow.reader.get());
  slow_received += drain_through(slow_queue, slow);
  CHECK(slow_received == *big);
  CHECK(big.use_count() == 1);
}

TEST_CASE("OutputQueue: a closed peer fails the write with EPIPE (SIGPIPE ignored)") {
  mux::ignore_sigpipe();
  SocketPair pair = make_pair();
  pair.reader.reset();
  mux::OutputQueue queue;
  queue.push("nobody is listening\n");
  int error = 0;
  CHECK(queue.write_to(pair.writer.get(), error) == Status::failed);
  CHECK(error == EPIPE);
  CHECK(queue.bytes() == 20);  // a failed write consumes nothing; the owner decides
  queue.clear();
  CHECK(queue.empty());
}

namespace {

// A watched fd whose EPOLLOUT is forwarded to a SocketWriter, as a connection does.
struct WatchedWriter {
  mux::EventLoop& loop;
  SocketPair pair;
  std::vector<int> errors;
  mux::SocketWriter writer;

  WatchedWriter(mux::EventLoop& event_loop, int type = SOCK_STREAM)
      : loop(event_loop),
        pair(make_pair(type)),
        writer(event_loop, pair.writer.get(), [this](int error) { errors.push_back(error); }) {
    loop.watch(pair.writer.get(), EPOLLIN, [this](std::uint32_t events) {
      if (events & EPOLLOUT) writer.on_writable();
    });
  }
  ~WatchedWriter() {
    writer.detach();
    loop.unwatch(pair.writer.get());
  }
  [[nodiscard]] bool wants_writable() const {
    return (loop.interest(pair.writer.get()) & EPOLLOUT) != 0;
  }
};

}  // namespace

TEST_CASE("SocketWriter: sends within one batch go out together at the end of the batch") {
  mux::EventLoop loop;
  // SOCK_SEQPACKET keeps message boundaries: each writev arrives as one record.
  WatchedWriter w(loop, SOCK_SEQPACKET);
  w.writer.send("one ");
  w.writer.send("two ");
  w.writer.send(mux::make_block("three\n"));
  CHECK(w.writer.queued() == 14);
  char record[256];
  CHECK(::recv(w.pair.reader.get(), record, sizeof record, MSG_DONTWAIT) == -1);  // nothing yet
  CHECK(errno == EAGAIN);

  loop.run_once(std::chrono::milliseconds(1000));  // the deferred flush runs at batch end
  CHECK(w.writer.queued() == 0);
  ssize_t n = ::recv(w.pair.reader.get(), record, sizeof record, MSG_DONTWAIT);
  REQUIRE(n == 14);
  CHECK(std::string(record, 14) == "one two three\n");  // one record: one writev
  CHECK(::recv(w.pair.reader.get(), record, sizeof record, MSG_DONTWAIT) == -1);
  CHECK_FALSE(w.wants_writable());
  CHECK(w.errors.empty());
}

TEST_CASE("SocketWriter: flush() writes at once") {
  mux::EventLoop loop;
  WatchedWriter w(loop);
  w.writer.send("now\n");
  w.writer.flush();
  CHECK(w.writer.queued() == 0);
  CHECK(read_available(w.pair.reader.get()) == "now\n");
  loop.run_once(std::chrono::milliseconds(0));  // the deferred flush finds nothing to do
  CHECK(read_available(w.pair.reader.get()).empty());
}

TEST_CASE("SocketWriter: EPOLLOUT is armed only while bytes remain") {
  mux::EventLoop loop;
  WatchedWriter w(loop);
  std::string expected = pattern(500000, 3);
  w.writer.send(expected.substr(0, 200000));
  w.writer.send(expected.substr(200000));
  CHECK_FALSE(w.wants_writable());  // nothing tried yet

  loop.run_once(std::chrono::milliseconds(0));
  REQUIRE(w.writer.queued() > 0);
  CHECK(w.writer.queued() < expected.size());
  CHECK(w.wants_writable());
  CHECK(loop.interest(w.pair.writer.get()) == (EPOLLIN | EPOLLOUT));

  bool drained = false;
  w.writer.when_drained([&] { drained = true; });
  CHECK_FALSE(drained);

  // More bytes while blocked join the queue behind the rest.
  w.writer.send("tail\n");
  expected += "tail\n";

  std::string received;
  for (int round = 0; round < 100000 && w.writer.queued() > 0; ++round) {
    received += read_available(w.pair.reader.get());
    CHECK(w.wants_writable());
    loop.run_once(std::chrono::milliseconds(1000));  // EPOLLOUT -> on_writable -> flush
  }
  REQUIRE(w.writer.queued() == 0);
  received += read_available(w.pair.reader.get());
  CHECK(received.size() == expected.size());
  CHECK(received == expected);
  CHECK(drained);
  CHECK_FALSE(w.wants_writable());
  CHECK(loop.interest(w.pair.writer.get()) == EPOLLIN);
  CHECK(w.errors.empty());
}

TEST_CASE("SocketWriter: when_drained with nothing queued runs at once") {
  mux::EventLoop loop;
  WatchedWriter w(loop);
  bool drained = false;
  w.writer.when_drained([&] { drained = true; });
  CHECK(drained);
}

TEST_CASE("SocketWriter: a closed peer reports EPIPE once and drops what was queued") {
  mux::ignore_sigpipe();
  mux::EventLoop loop;
  WatchedWriter w(loop);
  w.pair.reader.reset();
  bool drained = false;
  w.writer.send("lost\n");
  w.writer.when_drained([&] { drained = true; });
  loop.run_once(std::chrono::milliseconds(0));
  CHECK(w.errors == std::vector<int>{EPIPE});
  CHECK(w.writer.queued() == 0);
  CHECK(drained);  // waiting for a drain that can never come would hang a graceful close
  CHECK_FALSE(w.wants_writable());

  w.writer.send("ignored\n");  // after a failure, sends are dropped and the error not repeated
  CHECK(w.writer.queued() == 0);
  loop.run_once(std::chrono::milliseconds(0));
  CHECK(w.errors == std::vector<int>{EPIPE});
}

TEST_CASE("SocketWriter: a writer destroyed before the batch ends is not flushed") {
  mux::EventLoop loop;
  SocketPair pair = make_pair();
  {
    mux::SocketWriter writer(loop, pair.writer.get(), nullptr);
    writer.send("never\n");
  }
  loop.run_once(std::chrono::milliseconds(0));  // the deferred flush must find no writer
  CHECK(read_available(pair.reader.get()).empty());
}

TEST_CASE("SocketWriter: detach() drops pending bytes and stops writing") {
  mux::EventLoop loop;
  WatchedWriter w(loop);
  w.writer.send("dropped\n");
  w.writer.detach();
  CHECK(w.writer.queued() == 0);
  loop.run_once(std::chrono::milliseconds(0));
  CHECK(read_available(w.pair.reader.get()).empty());
  w.writer.send("after\n");
  CHECK(w.writer.queued() == 0);
}

TEST_CASE("OutputQueue through a plain ByteStream: partial writes keep order; EOF and reset") {
  SocketPair pair = make_pair();
  std::unique_ptr<mux::ByteStream> stream = mux::make_plain_stream(pair.writer.get());
  CHECK(stream->handshake().ok());
  mux::OutputQueue queue;
  std::string sent = pattern(300000, 7);
  queue.push(sent.substr(0, 1000));
  queue.push(sent.substr(1000));
  std::string received;
  bool saw_block = false;
  for (int round = 0; round < 100000 && !queue.empty(); ++round) {
    mux::IoResult failure;
    Status status = queue.write_to(*stream, failure);
    REQUIRE(status != Status::failed);
    if (status == Status::blocked) {
      saw_block = true;
      CHECK(stream->wants() == EPOLLOUT);
    }
    received += read_available(pair.reader.get());
  }
  received += read_available(pair.reader.get());
  CHECK(saw_block);
  CHECK(received == sent);

  char byte = 0;
  CHECK(stream->read(&byte, 1).blocked());
  CHECK(stream->wants() == EPOLLIN);
  REQUIRE(::write(pair.reader.get(), "x", 1) == 1);
  mux::IoResult got = stream->read(&byte, 1);
  CHECK(got.ok());
  CHECK(got.bytes == 1);
  CHECK(byte == 'x');
  REQUIRE(stream->shutdown_write().ok());
  char peer_byte = 0;
  CHECK(::read(pair.reader.get(), &peer_byte, 1) == 0);  // the peer sees our FIN
  pair.reader.reset();
  CHECK(stream->read(&byte, 1).status == mux::IoResult::Status::end_of_stream);
  iovec one{const_cast<char*>("y"), 1};
  mux::IoResult failed = stream->writev(&one, 1);
  CHECK(failed.status == mux::IoResult::Status::failed);
  CHECK(failed.error == EPIPE);
  CHECK(failed.describe() == "Broken pipe");
}
