// Connection, Connector, Listener admission and ChildSupervisor over real socketpairs and
// loopback sockets. Every wait is "run the loop until this is true", with a deadline.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/base/logger.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/listener.hpp"
#include "core/loop/net.hpp"
#include "core/service/child_supervisor.hpp"

using namespace std::chrono_literals;

namespace {

// Runs the loop until `done` is true or `limit` passes; returns `done()`.
bool run_until(mux::EventLoop& loop, const std::function<bool()>& done,
               std::chrono::milliseconds limit = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline)
    loop.run_once(20ms);
  return done();
}

struct SocketPair {
  mux::Fd ours;
  mux::Fd theirs;
};

SocketPair socket_pair() {
  int ends[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
  return {mux::Fd(ends[0]), mux::Fd(ends[1])};
}

// A connected loopback TCP pair (ours non-blocking, theirs blocking) and the listener's port.
struct TcpPair {
  mux::Fd ours;
  mux::Fd theirs;
};

TcpPair tcp_pair() {
  mux::Fd listener = mux::listen_tcp("127.0.0.1", 0);
  sockaddr_in address{};
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0);
  mux::Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&address), length) == 0);
  pollfd ready{listener.get(), POLLIN, 0};
  REQUIRE(::poll(&ready, 1, 5000) == 1);
  mux::Fd server(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  REQUIRE(server.valid());
  return {std::move(server), std::move(client)};
}

std::string read_some(int fd) {
  char buffer[65536];
  ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

// Reads until EOF (blocking socket, bounded by SO_RCVTIMEO); `error` gets errno on a failure.
std::string read_to_end(int fd, int& error) {
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string all;
  error = 0;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n > 0) {
      all.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0) error = errno;
    return all;
  }
}

struct RecordingOwner : mux::Connection::Owner {
  std::string data;
  bool ended = false;
  std::optional<std::string> closed_reason;
  int ready = 0;
  std::size_t high_water = 0;
  int idle = 0;
  std::function<void(std::string_view)> on_bytes;

  void on_data(std::string_view bytes) override {
    data += bytes;
    if (on_bytes) on_bytes(bytes);
  }
  void on_end_of_input() override { ended = true; }
  void on_closed(std::string_view reason) override { closed_reason = std::string(reason); }
  void on_ready() override { ++ready; }
  void on_high_water(std::size_t queued) override { high_water = queued; }
  void on_idle() override { ++idle; }
};

}  // namespace

TEST_CASE("Connection: reports data and end of input, and sends") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  CHECK(connection.ready());
  REQUIRE(::write(pair.theirs.get(), "hello\n", 6) == 6);
  CHECK(run_until(loop, [&] { return owner.data == "hello\n"; }));
  connection.send("one ");
  connection.send(mux::make_block("two\n"));
  std::string got;
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got == "one two\n";
  }));
  ::shutdown(pair.theirs.get(), SHUT_WR);
  CHECK(run_until(loop, [&] { return owner.ended; }));
  CHECK(connection.input_ended());
  // Half-open: still writable after the peer's EOF.
  connection.send("bye\n");
  got.clear();
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got == "bye\n";
  }));
  CHECK_FALSE(owner.closed_reason);
}

TEST_CASE("Connection: graceful close drains, half-closes and lingers until the peer's EOF") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  TcpPair pair = tcp_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  // The peer is still sending when we close: without the linger, the unread input would turn
  // our close into a reset that can destroy the reply.
  std::string flood(256 * 1024, 'x');
  REQUIRE(::send(pair.theirs.get(), flood.data(), 64 * 1024, MSG_DONTWAIT) > 0);
  connection.send(std::string(200 * 1024, 'r'));
  connection.close_gracefully();
  CHECK(connection.closing());
  int error = 0;
  std::string got;
  std::atomic<bool> finished = false;
  std::thread reader([&] {
    got = read_to_end(pair.theirs.get(), error);
    finished = true;
  });
  // Our FIN arrives after all 200 KiB; the peer has read to EOF but not closed yet.
  run_until(loop, [&] { return finished.load(); });
  reader.join();
  CHECK(error == 0);
  CHECK(got == std::string(200 * 1024, 'r'));
  CHECK_FALSE(owner.closed_reason);  // still lingering: the peer has not closed
  pair.theirs.reset();
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(*owner.closed_reason == "");
  CHECK(owner.data.empty());  // nothing is reported once closing has begun
}

TEST_CASE("Connection: the linger is bounded when the peer never closes") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  context.linger_timeout = 50ms;
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.send("last\n");
  connection.close_gracefully();
  CHECK(run_until(
      loop, [&] { return owner.closed_reason.has_value(); }, 2000ms));
  CHECK(read_some(pair.theirs.get()) == "last\n");
}

TEST_CASE("Connection: close_now drops the output and reports the reason after the batch") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  auto connection = std::make_unique<mux::Connection>(context, std::move(pair.ours), owner);
  connection->send("never\n");
  connection->close_now("kicked");
  CHECK(connection->closed());
  CHECK_FALSE(owner.closed_reason);  // deferred, never inside the caller's own call
  loop.run_once(0ms);
  REQUIRE(owner.closed_reason);
  CHECK(*owner.closed_reason == "kicked");
  int error = 0;
  CHECK(read_to_end(pair.theirs.get(), error).empty());
}

TEST_CASE("Connection: a connection destroyed before its deferred report is not touched") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  auto connection = std::make_unique<mux::Connection>(context, std::move(pair.ours), owner);
  connection->send("queued\n");  // a deferred flush
  connection->close_now("gone");
  connection.reset();
  loop.run_once(0ms);
  CHECK_FALSE(owner.closed_reason);
}

TEST_CASE("Connection: pause_reading stops reading until resume_reading") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.pause_reading();
  REQUIRE(::write(pair.theirs.get(), "held", 4) == 4);
  for (int i = 0; i < 5; ++i)
    loop.run_once(10ms);
  CHECK(owner.data.empty());
  CHECK(loop.interest(connection.fd()) == 0);
  connection.resume_reading();
  CHECK(run_until(loop, [&] { return owner.data == "held"; }));
}

TEST_CASE("Connection: a reset while paused closes it instead of spinning on EPOLLHUP") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  TcpPair pair = tcp_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.pause_reading();
  linger abort_on_close{1, 0};
  ::setsockopt(pair.theirs.get(), SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close);
  pair.theirs.reset();  // RST
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(owner.closed_reason->find("reset") != std::string::npos);
}

TEST_CASE("Connection: the high-water mark trips when a reader does not keep up") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.set_high_water_mark(64 * 1024);
  connection.send(std::string(1000, 'a'));
  CHECK(owner.high_water == 0);
  for (int i = 0; i < 100 && owner.high_water == 0; ++i)
    connection.send(std::string(64 * 1024, 'b'));
  CHECK(owner.high_water > 64 * 1024);
  CHECK(connection.queued() == owner.high_water);
}

TEST_CASE("Connection: the idle timer fires without input and not while input flows") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.set_idle_timeout(300ms);
  // Input every 50 ms for 600 ms keeps it quiet.
  auto start = std::chrono::steady_clock::now();
  auto last_write = start;
  while (std::chrono::steady_clock::now() - start < 600ms) {
    REQUIRE(::write(pair.theirs.get(), "x", 1) == 1);
    last_write = std::chrono::steady_clock::now();
    run_until(
        loop, [&] { return false; }, 50ms);
  }
  CHECK(owner.idle == 0);
  CHECK(run_until(
      loop, [&] { return owner.idle == 1; }, 2000ms));
  auto quiet = std::chrono::steady_clock::now() - last_write;
  CHECK(quiet >= 250ms);
}

namespace {

// A stream whose handshake takes `steps` readable events (each consumes one byte) and that
// can pretend to hold decrypted input the socket no longer shows.
class SlowHandshakeStream final : public mux::ByteStream {
 public:
  SlowHandshakeStream(int fd, int steps, std::string buffered)
      : fd_(fd), steps_(steps), buffered_(std::move(buffered)) {}

  mux::IoResult handshake() override {
    while (steps_ > 0) {
      char byte;
      if (::read(fd_, &byte, 1) != 1) return mux::IoResult::blocked_on();
      --steps_;
    }
    return mux::IoResult::moved(0);
  }
  mux::IoResult read(char* data, std::size_t size) override {
    if (!buffered_.empty()) {
      std::size_t n = std::min<std::size_t>({size, buffered_.size(), 2});
      buffered_.copy(data, n);
      buffered_.erase(0, n);
      return mux::IoResult::moved(n);
    }
    ssize_t n = ::read(fd_, data, size);
    if (n > 0) return mux::IoResult::moved(static_cast<std::size_t>(n));
    if (n == 0) return mux::IoResult::end();
    if (errno == EAGAIN) return mux::IoResult::blocked_on();
    return mux::IoResult::failure(errno);
  }
  mux::IoResult writev(const iovec* chunks, int count) override {
    ssize_t n = ::writev(fd_, chunks, count);
    if (n >= 0) return mux::IoResult::moved(static_cast<std::size_t>(n));
    if (errno == EAGAIN) return mux::IoResult::blocked_on();
    return mux::IoResult::failure(errno);
  }
  mux::IoResult shutdown_write() override {
    ::shutdown(fd_, SHUT_WR);
    return mux::IoResult::moved(0);
  }
  [[nodiscard]] std::uint32_t wants() const override { return EPOLLIN; }
  [[nodiscard]] bool has_buffered_input() const override { return !buffered_.empty(); }
  [[nodiscard]] int fd() const noexcept override { return fd_; }
  void renumber(int fd) noexcept override { fd_ = fd; }

 private:
  int fd_;
  int steps_;
  std::string buffered_;
};

}  // namespace

TEST_CASE("Connection: a handshake completes before any data; sends wait for it") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  int fd = pair.ours.get();
  mux::Connection connection(context, std::move(pair.ours),
                             std::make_unique<SlowHandshakeStream>(fd, 2, "abcdef"), owner);
  CHECK_FALSE(connection.ready());
  connection.send("early\n");
  REQUIRE(::write(pair.theirs.get(), "H", 1) == 1);
  for (int i = 0; i < 3; ++i)
    loop.run_once(10ms);
  CHECK_FALSE(connection.ready());
  CHECK(read_some(pair.theirs.get()).empty());
  REQUIRE(::write(pair.theirs.get(), "H", 1) == 1);
  CHECK(run_until(loop, [&] { return connection.ready(); }));
  CHECK(owner.ready == 1);
  // The buffered input is read although epoll never reports the socket readable.
  CHECK(run_until(loop, [&] { return owner.data == "abcdef"; }));
  std::string got;
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got == "early\n";
  }));
}

TEST_CASE("Connection: a handshake that does not finish in time is closed") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  context.handshake_timeout = 50ms;
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  int fd = pair.ours.get();
  mux::Connection connection(context, std::move(pair.ours),
                             std::make_unique<SlowHandshakeStream>(fd, 5, ""), owner);
  CHECK(run_until(
      loop, [&] { return owner.closed_reason.has_value(); }, 2000ms));
  CHECK(*owner.closed_reason == "handshake timed out");
  CHECK(owner.ready == 0);
}

TEST_CASE("Connector: connects without blocking, reports refusal, never calls back inside") {
  mux::EventLoop loop;
  mux::Fd listener = mux::listen_tcp("127.0.0.1", 0);
  std::string endpoint = mux::local_address(listener.get());
  auto port = static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
  std::optional<std::string> error;
  mux::Fd connected;
  mux::Connector good(loop, "127.0.0.1", port, 2000ms, [&](mux::Fd socket, std::string why) {
    connected = std::move(socket);
    error = std::move(why);
  });
  CHECK_FALSE(error);
  CHECK(run_until(loop, [&] { return error.has_value(); }));
  CHECK(*error == "");
  REQUIRE(connected.valid());
  CHECK(mux::peer_address(connected.get()) == endpoint);

  listener.reset();  // nothing listens on the port any more
  std::optional<std::string> refused;
  mux::Connector bad(loop, "127.0.0.1", port, 2000ms, [&](mux::Fd socket, std::string why) {
    CHECK_FALSE(socket.valid());
    refused = std::move(why);
  });
  CHECK_FALSE(refused);
  CHECK(run_until(loop, [&] { return refused.has_value(); }));
  CHECK(*refused == "connect to 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

namespace {

// A blocking client socket bound to `source` (127.0.0.2 ... stands for another machine).
mux::Fd connect_from(const char* source, std::uint16_t port) {
  mux::Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &local.sin_addr);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) == 0);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&remote), sizeof remote) == 0);
  return fd;
}

std::uint16_t port_of(int fd) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

}  // namespace

TEST_CASE("Listener: per-address cap refuses with the message; a freed slot admits again") {
  mux::EventLoop loop;
  mux::Logger logger(mux::Verbosity::quiet);
  mux::AdmissionPolicy policy;
  policy.max_per_address = 2;
  policy.refusal_message = [](mux::Refusal refusal) {
    return std::string("* ") + mux::describe(refusal) + "\n";
  };
  std::vector<mux::Admitted> admitted;
  mux::Listener listener(loop, mux::listen_tcp("127.0.0.1", 0), logger, std::move(policy),
                         [&](mux::Admitted client) { admitted.push_back(std::move(client)); });
  listener.resume();
  std::uint16_t port = port_of(listener.fd());
  mux::Fd first = connect_from("127.0.0.2", port);
  mux::Fd second = connect_from("127.0.0.2", port);
  CHECK(run_until(loop, [&] { return admitted.size() == 2; }));
  mux::Fd third = connect_from("127.0.0.2", port);
  mux::Fd other = connect_from("127.0.0.3", port);  // another address is not affected
  CHECK(run_until(loop, [&] { return admitted.size() == 3 && listener.refusing() == 1; }));
  CHECK(listener.connections() == 3);
  int error = 0;
  std::string refusal;
  std::atomic<bool> finished = false;
  std::thread reader([&] {
    refusal = read_to_end(third.get(), error);
    finished = true;
  });
  run_until(loop, [&] { return finished.load(); });
  reader.join();
  third.reset();  // the refused client closes: the linger ends
  CHECK(refusal == "* too many connections from this address\n");
  CHECK(error == 0);
  CHECK(run_until(loop, [&] { return listener.refusing() == 0; }));

  admitted.erase(admitted.begin());  // its ticket gives the slot back
  CHECK(listener.connections() == 2);
  mux::Fd again = connect_from("127.0.0.2", port);
  CHECK(run_until(loop, [&] { return admitted.size() == 3; }));
}

TEST_CASE("Listener: at the global cap newcomers wait in the backlog until a slot frees") {
  mux::EventLoop loop;
  mux::Logger logger(mux::Verbosity::quiet);
  mux::AdmissionPolicy policy;
  policy.max_connections = 1;
  std::vector<mux::Admitted> admitted;
  mux::Listener listener(loop, mux::listen_tcp("127.0.0.1", 0), logger, std::move(policy),
                         [&](mux::Admitted client) { admitted.push_back(std::move(client)); });
  listener.resume();
  std::uint16_t port = port_of(listener.fd());
  mux::Fd first = connect_from("127.0.0.1", port);
  mux::Fd second = connect_from("127.0.0.1", port);
  CHECK(run_until(loop, [&] { return admitted.size() == 1; }));
  for (int i = 0; i < 5; ++i)
    loop.run_once(10ms);
  CHECK(admitted.size() == 1);
  CHECK(listener.refusing() == 0);
  admitted.clear();
  CHECK(run_until(loop, [&] { return admitted.size() == 1; }));
}

TEST_CASE("Listener: the allowed() hook refuses; refuse_when_full accepts and refuses") {
  mux::EventLoop loop;
  mux::Logger logger(mux::Verbosity::quiet);
  mux::AdmissionPolicy policy;
  policy.max_connections = 1;
  policy.refuse_when_full = true;
  policy.allowed = [](const sockaddr* address, socklen_t) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    return v4->sin_addr.s_addr != htonl(0x7f000004);  // not 127.0.0.4
  };
  std::vector<mux::Admitted> admitted;
  mux::Listener listener(loop, mux::listen_tcp("127.0.0.1", 0), logger, std::move(policy),
                         [&](mux::Admitted client) { admitted.push_back(std::move(client)); });
  listener.resume();
  std::uint16_t port = port_of(listener.fd());
  mux::Fd denied = connect_from("127.0.0.4", port);
  CHECK(run_until(loop, [&] { return listener.refusing() == 1; }));
  CHECK(admitted.empty());
  mux::Fd first = connect_from("127.0.0.2", port);
  CHECK(run_until(loop, [&] { return admitted.size() == 1; }));
  mux::Fd full = connect_from("127.0.0.3", port);
  CHECK(run_until(loop, [&] { return listener.refusing() == 2; }));
  CHECK(admitted.size() == 1);
}

TEST_CASE("ChildSupervisor: reaps, describes, runs the cleanup and frees the ticket") {
  mux::EventLoop loop;
  mux::Logger logger(mux::Verbosity::quiet);
  mux::ChildSupervisor children(loop, logger, 2);
  CHECK(children.max_children() == 2);
  std::vector<std::string> ended;
  auto counts = std::make_shared<mux::AdmissionCounts>();
  pid_t exits = children.spawn(
      {}, [] { return 3; },
      [&](pid_t, int status) { ended.push_back(mux::ChildSupervisor::describe_exit(status)); },
      mux::AdmissionTicket(counts, "a"));
  CHECK(counts->total == 1);
  int ready_pipe[2];
  REQUIRE(::pipe2(ready_pipe, O_CLOEXEC) == 0);
  mux::Fd ready_read(ready_pipe[0]);
  mux::Fd ready_write(ready_pipe[1]);
  pid_t sleeper = children.spawn(
      {ready_write.get()},
      [&] {
        ::signal(SIGTERM, SIG_IGN);  // a hung child: only SIGKILL ends it
        (void)!::write(ready_write.get(), "r", 1);
        ::pause();
        return 0;
      },
      [&](pid_t, int status) { ended.push_back(mux::ChildSupervisor::describe_exit(status)); });
  CHECK(exits != sleeper);
  char byte = 0;
  REQUIRE(::read(ready_read.get(), &byte, 1) == 1);  // SIGTERM is ignored from now on
  CHECK_FALSE(children.has_room());
  CHECK(run_until(loop, [&] { return ended.size() == 1; }));
  CHECK(ended[0] == "exit status 3");
  CHECK(counts->total == 0);
  CHECK(children.has_room());
  children.terminate_all(SIGTERM, 100ms);
  CHECK(run_until(loop, [&] { return ended.size() == 2; }));
  CHECK(ended[1] == "killed by signal 9 (Killed)");
  CHECK(children.count() == 0);
}

TEST_CASE("ChildSupervisor: the default cap comes from the machine and is never tiny") {
  std::size_t cap = mux::ChildSupervisor::default_max_children(1 << 20);
  CHECK(cap >= mux::ChildSupervisor::kMinChildren);
  // A child that would need more memory than the machine has still gets the floor.
  CHECK(mux::ChildSupervisor::default_max_children(std::size_t{1} << 50) ==
        mux::ChildSupervisor::kMinChildren);
}

TEST_CASE("Connection: a context's stream factory makes every connection's stream") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  std::vector<int> made_for;
  context.stream_factory = [&](int fd) {
    made_for.push_back(fd);
    return mux::make_plain_stream(fd);
  };
  SocketPair pair = socket_pair();
  int fd = pair.ours.get();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  CHECK(made_for == std::vector<int>{fd});
  CHECK(connection.stream()->fd() == fd);
}

TEST_CASE(
    "Connection: take_in_child moves the socket and its stream to a connection of another loop") {
  // What a fork-mode upload child does with the connection it inherited: no system call on the
  // first loop (the parent's), the same stream going on in the second.
  mux::EventLoop parent_loop;
  mux::ConnectionContext parent_context(parent_loop, 4096);
  TcpPair pair = tcp_pair();
  RecordingOwner first_owner;
  mux::Connection first(parent_context, std::move(pair.ours), first_owner);
  REQUIRE(::send(pair.theirs.get(), "header\n", 7, 0) == 7);
  CHECK(run_until(parent_loop, [&] { return first_owner.data == "header\n"; }));
  mux::Connection::Parts parts = first.take_in_child();
  CHECK(first.closed());
  REQUIRE(parts.socket.valid());
  REQUIRE(parts.stream != nullptr);
  CHECK(parts.stream->fd() == parts.socket.get());
  mux::EventLoop child_loop;
  mux::ConnectionContext child_context(child_loop, 4096);
  RecordingOwner second_owner;
  mux::Connection second(child_context, std::move(parts.socket), std::move(parts.stream),
                         second_owner);
  CHECK(second.ready());
  REQUIRE(::send(pair.theirs.get(), "body", 4, 0) == 4);
  CHECK(run_until(child_loop, [&] { return second_owner.data == "body"; }));
  second.send("OK\n");
  CHECK(run_until(child_loop, [&] { return second.queued() == 0; }));
  CHECK(read_some(pair.theirs.get()) == "OK\n");
}

TEST_CASE("Connection: forget closes this copy of the socket without a word") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop, 4096);
  TcpPair pair = tcp_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  // The child's copy of the socket (fork() duplicates the descriptor like dup()).
  mux::Fd child_copy(::dup(connection.fd()));
  REQUIRE(child_copy.valid());
  connection.send("never sent\n");
  connection.forget();
  CHECK(connection.closed());
  loop.run_once(20ms);
  CHECK_FALSE(owner.closed_reason.has_value());  // given away, not closed
  // No byte, no FIN: the peer's read would block, and the copy still talks to it.
  char byte = 0;
  ssize_t got = ::recv(pair.theirs.get(), &byte, 1, MSG_DONTWAIT);
  int error = errno;
  CHECK(got < 0);
  CHECK(error == EAGAIN);
  REQUIRE(::send(child_copy.get(), "from the child", 14, MSG_NOSIGNAL) == 14);
  CHECK(read_some(pair.theirs.get()) == "from the child");
}

TEST_CASE("Connection: shutdown_output half-closes after the queue and keeps reading") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  TcpPair pair = tcp_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.send("last words\n");
  connection.shutdown_output();
  connection.send("ignored\n");
  int error = 0;
  CHECK(read_to_end(pair.theirs.get(), error) == "last words\n");
  CHECK(error == 0);
  CHECK(connection.output_shut_down());
  REQUIRE(::send(pair.theirs.get(), "reply\n", 6, 0) == 6);
  ::shutdown(pair.theirs.get(), SHUT_WR);
  CHECK(run_until(loop, [&] { return owner.ended; }));
  CHECK(owner.data == "reply\n");
}

TEST_CASE("Connection: a half-close asked for inside on_writable waits for what it queued") {
  // Found by upload-client's batches: on_writable() queued a file's tail and asked for the
  // half-close; the write_now() that called it then shut the socket with the tail still queued.
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  struct TailOwner : RecordingOwner {
    std::function<void()> writable;
    void on_writable() override {
      if (writable) std::exchange(writable, nullptr)();
    }
  } owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  std::string first(1 << 20, 'a');
  std::string tail(1 << 20, 'b');
  connection.send(first);  // more than a socketpair takes: the rest waits for writability
  owner.writable = [&] {
    connection.send(tail);
    connection.shutdown_output();
  };
  std::string received;
  bool eof = false;
  CHECK(run_until(loop, [&] {
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(pair.theirs.get(), buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) {
        received.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      eof = n == 0;
      break;
    }
    return eof;
  }));
  CHECK(received.size() == first.size() + tail.size());
  CHECK(received == first + tail);
  CHECK(connection.output_shut_down());
}

TEST_CASE("Connection: send_batch writes in place and says when a full socket takes more") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  struct BatchOwner : RecordingOwner {
    std::function<void()> writable;
    void on_writable() override { writable(); }
  } owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  std::string big(1 << 20, 'x');
  std::string head = "head:";
  std::array<iovec, 2> chunks{iovec{head.data(), head.size()}, iovec{big.data(), big.size()}};
  mux::IoResult first = connection.send_batch(chunks);
  REQUIRE(first.ok());
  REQUIRE(first.bytes < head.size() + big.size());  // a socketpair takes far less than 1 MiB
  CHECK(connection.send_batch(chunks).blocked());   // nothing goes while it is full
  // Once the reader makes room, on_writable() and the rest goes from there.
  std::string tail = "tail";
  std::optional<mux::IoResult> second;
  owner.writable = [&] {
    std::array<iovec, 1> rest{iovec{tail.data(), tail.size()}};
    second = connection.send_batch(rest);
  };
  std::size_t drained = 0;
  CHECK(run_until(loop, [&] {
    drained += read_some(pair.theirs.get()).size();
    return second.has_value();
  }));
  REQUIRE(second->ok());
  CHECK(second->bytes == tail.size());
  CHECK(run_until(loop, [&] {
    drained += read_some(pair.theirs.get()).size();
    return drained == first.bytes + tail.size();
  }));
}

TEST_CASE("Connection: abort closes with a reset") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  TcpPair pair = tcp_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.send("never sent\n");
  connection.abort("cut short");
  int error = 0;
  CHECK(read_to_end(pair.theirs.get(), error).empty());
  CHECK(error == ECONNRESET);
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(*owner.closed_reason == "cut short");
}

namespace {

// The kernel's stream on a real socket, counting the writes that reach it.
class CountingStream final : public mux::ByteStream {
 public:
  CountingStream(int fd, int& writes) : plain_(mux::make_plain_stream(fd)), writes_(writes) {}
  mux::IoResult handshake() override { return plain_->handshake(); }
  mux::IoResult read(char* data, std::size_t size) override { return plain_->read(data, size); }
  mux::IoResult writev(const iovec* chunks, int count) override {
    ++writes_;
    return plain_->writev(chunks, count);
  }
  mux::IoResult shutdown_write() override { return plain_->shutdown_write(); }
  [[nodiscard]] std::uint32_t wants() const override { return plain_->wants(); }
  [[nodiscard]] int fd() const noexcept override { return plain_->fd(); }
  void renumber(int fd) noexcept override { plain_->renumber(fd); }

 private:
  std::unique_ptr<mux::ByteStream> plain_;
  int& writes_;
};

}  // namespace

TEST_CASE("Connection: everything one batch sends to a connection leaves in one write") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  TcpPair pair = tcp_pair();
  int writes = 0;
  int fd = pair.ours.get();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours),
                             std::make_unique<CountingStream>(fd, writes), owner);
  // Two sockets ready in one batch, as two chat senders are: the first event sends once, the
  // last event sends twice (a broadcast, then a notice). One writev, so one TCP segment.
  SocketPair first = socket_pair();
  SocketPair last = socket_pair();
  REQUIRE(::write(first.theirs.get(), "x", 1) == 1);
  REQUIRE(::write(last.theirs.get(), "x", 1) == 1);
  auto drain = [](int ready_fd) {
    char byte = 0;
    (void)::read(ready_fd, &byte, 1);
  };
  loop.watch(first.ours.get(), EPOLLIN, [&](std::uint32_t) {
    drain(first.ours.get());
    connection.send("one\n");
  });
  loop.watch(last.ours.get(), EPOLLIN, [&](std::uint32_t) {
    drain(last.ours.get());
    connection.send("two\n");
    connection.send("three\n");
  });
  loop.run_once(1000ms);
  CHECK(writes == 1);
  std::string got;
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got.size() >= 14;
  }));
  CHECK(got == "one\ntwo\nthree\n");
  CHECK(writes == 1);
  loop.unwatch(first.ours.get());
  loop.unwatch(last.ours.get());
  // A batch with one event and three sends: still one write.
  REQUIRE(::write(last.theirs.get(), "x", 1) == 1);
  loop.watch(last.ours.get(), EPOLLIN, [&](std::uint32_t) {
    drain(last.ours.get());
    for (const char* line : {"a\n", "b\n", "c\n"})
      connection.send(line);
  });
  loop.run_once(1000ms);
  CHECK(writes == 2);
  got.clear();
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got.size() >= 6;
  }));
  CHECK(got == "a\nb\nc\n");
  loop.unwatch(last.ours.get());
}

TEST_CASE("Connection: a connection destroyed with output pending is not flushed") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  auto connection = std::make_unique<mux::Connection>(context, std::move(pair.ours), owner);
  connection->send("never\n");
  connection.reset();
  loop.run_once(0ms);  // would touch freed memory if the flush were still listed (ASan: abort)
  CHECK(read_some(pair.theirs.get()).empty());
}

TEST_CASE("Connection: send_now writes the blocks at once and queues what a full socket refuses") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  struct DrainOwner : RecordingOwner {
    int writable = 0;
    void on_writable() override { ++writable; }
  } owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  mux::Block one = mux::make_block("one ");
  mux::Block two = mux::make_block("two\n");
  std::array<const mux::Block*, 2> small{&one, &two};
  connection.send_now(small);
  CHECK(connection.queued() == 0);
  CHECK(read_some(pair.theirs.get()) == "one two\n");  // written before the batch ends

  // More than the socketpair holds: what it refuses waits in the queue, in order.
  std::string expected;
  std::vector<mux::Block> blocks;
  for (int i = 0; i < 100; ++i) {
    blocks.push_back(mux::make_block(std::string(16 * 1024, static_cast<char>('a' + i % 26))));
    expected += *blocks.back();
  }
  std::vector<const mux::Block*> pointers;
  for (const mux::Block& block : blocks)
    pointers.push_back(&block);
  connection.send_now(pointers);
  REQUIRE(connection.queued() > 0);
  CHECK(connection.queued() < expected.size());
  // Queued output goes first: these blocks wait behind it.
  mux::Block tail = mux::make_block("tail\n");
  std::array<const mux::Block*, 1> after{&tail};
  connection.send_now(after);
  expected += "tail\n";
  std::string got;
  CHECK(run_until(loop, [&] {
    got += read_some(pair.theirs.get());
    return got.size() >= expected.size();
  }));
  CHECK(got == expected);
  CHECK(owner.writable == 1);  // once the queue is written
  CHECK(connection.queued() == 0);
}

TEST_CASE("Connection: plain ignores the context's stream factory") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  int made = 0;
  context.stream_factory = [&made](int fd) {
    ++made;
    return mux::make_plain_stream(fd);
  };
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), mux::Connection::plain, owner);
  CHECK(made == 0);
  CHECK(connection.ready());
}

TEST_CASE("Connection: a failed write first hears the peer's last words, after the batch") {
  mux::ignore_sigpipe();
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.set_read_last_words(true);
  // The peer says its last words and goes before we read them.
  REQUIRE(::write(pair.theirs.get(), "Q0bye\n", 6) == 6);
  pair.theirs.reset();
  mux::Block block = mux::make_block("to nobody\n");
  std::array<const mux::Block*, 1> blocks{&block};
  connection.send_now(blocks);
  CHECK(owner.data.empty());  // never inside the write's caller
  CHECK_FALSE(owner.closed_reason);
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(owner.data == "Q0bye\n");
  CHECK(owner.closed_reason->starts_with("write failed: "));
  CHECK(connection.failure().error == EPIPE);
}

TEST_CASE("Connection: without last words a failed write closes at once") {
  mux::ignore_sigpipe();
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  REQUIRE(::write(pair.theirs.get(), "unread\n", 7) == 7);
  pair.theirs.reset();
  connection.send("to nobody\n");
  connection.flush();
  CHECK(connection.closed());
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(owner.data.empty());
}

TEST_CASE("Connection: a hang-up while paused hears the last words when asked") {
  mux::EventLoop loop;
  mux::ConnectionContext context(loop);
  SocketPair pair = socket_pair();
  RecordingOwner owner;
  mux::Connection connection(context, std::move(pair.ours), owner);
  connection.set_read_last_words(true);
  connection.pause_reading();
  REQUIRE(::write(pair.theirs.get(), "last\n", 5) == 5);
  pair.theirs.reset();
  CHECK(run_until(loop, [&] { return owner.closed_reason.has_value(); }));
  CHECK(owner.data == "last\n");
}
