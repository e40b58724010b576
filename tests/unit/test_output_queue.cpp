// OutputQueue against real non-blocking sockets (AF_UNIX socketpairs) whose send
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

#include "core/loop/byte_stream.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"
#include "core/loop/output_queue.hpp"

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

// The queue written through the kernel's plain stream on `fd`; `error` gets errno on a failure.
Status write_to(mux::OutputQueue& queue, int fd, int& error) {
  std::unique_ptr<mux::ByteStream> stream = mux::make_plain_stream(fd);
  mux::IoResult failure;
  Status status = queue.write_to(*stream, failure);
  error = failure.error;
  return status;
}

// Writes and reads alternately until the queue is drained; a bounded number of rounds.
std::string drain_through(mux::OutputQueue& queue, const SocketPair& pair) {
  std::string received;
  for (int round = 0; round < 100000 && !queue.empty(); ++round) {
    int error = -1;
    Status status = write_to(queue, pair.writer.get(), error);
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
  CHECK(write_to(queue, pair.writer.get(), error) == Status::drained);
  CHECK(error == 0);
  CHECK(queue.empty());
  CHECK(read_available(pair.reader.get()) == "hello world\n");
  // Nothing queued: drained without writing.
  CHECK(write_to(queue, pair.writer.get(), error) == Status::drained);
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
  CHECK(write_to(queue, pair.writer.get(), error) == Status::blocked);
  CHECK(error == 0);
  std::size_t first_left = queue.bytes();
  CHECK(first_left > 0);
  CHECK(first_left < expected.size());  // the kernel took some, not all

  // EAGAIN with nothing taken: the queue is unchanged.
  CHECK(write_to(queue, pair.writer.get(), error) == Status::blocked);
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
    CHECK(write_to(queues[i], pairs[i].writer.get(), error) == Status::drained);
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
  REQUIRE(write_to(slow_queue, slow.writer.get(), error) == Status::blocked);
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
  CHECK(write_to(queue, pair.writer.get(), error) == Status::failed);
  CHECK(error == EPIPE);
  CHECK(queue.bytes() == 20);  // a failed write consumes nothing; the owner decides
  queue.clear();
  CHECK(queue.empty());
}
