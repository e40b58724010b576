// floor_relay: the floor the chat latency is held to in bench/run. One thread, one epoll loop:
// whatever it reads from one client socket it writes to every other client socket, at once, in
// the order the sockets were accepted. No framing, no names, no welcome, no per-client queue —
// the least work a single-threaded relay can do per delivery, so the difference between mux and
// this is what mux's own structure costs.
//
// What a receiver that cannot take the bytes gets: nothing. A write that meets EAGAIN (or a
// short write) drops what did not fit — the relay never blocks and never queues — and the count
// of dropped bytes is printed on exit. In the latency scenario (a few hundred 64-byte lines per
// second) nothing is ever dropped, which the exit line shows.
//
// --batch 1: the same relay with the one thing a loaded single thread needs to keep up: it reads
// every socket that is readable in one epoll batch first, then gives each receiver everything
// but its own chunks in one writev (still no framing, names or per-client queues). When the
// thread falls behind, several senders' lines then share one write per receiver, which is what
// mux's end-of-batch flush does; without it, each line costs a full fan-out however late it is.
//
//   floor_relay --host 127.0.0.1 --port 0 [--batch 0|1]   prints "listening on HOST:PORT"
//
// SIGTERM/SIGINT end it (exit 0) with one summary line on stderr. Loopback addresses only.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "core/loop/fd.hpp"

namespace {

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

struct Counters {
  std::uint64_t reads = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t deliveries = 0;  // writes that took the whole chunk
  std::uint64_t dropped_bytes = 0;
  std::uint64_t short_writes = 0;        // writes that took part or none of a chunk (EAGAIN)
  std::vector<std::int64_t> fan_out_ns;  // how long each read's fan-out took (per-batch timing)
};

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// "p50 p99 max" of the fan-out times in microseconds.
std::string fan_out_summary(std::vector<std::int64_t> ns) {
  if (ns.empty()) return "no fan-outs";
  std::sort(ns.begin(), ns.end());
  auto at = [&](double p) {
    return static_cast<double>(
               ns[static_cast<std::size_t>(p * static_cast<double>(ns.size() - 1))]) /
           1e3;
  };
  return fmt::format("fan-out per read: p50 {:.0f} us, p99 {:.0f} us, max {:.0f} us", at(0.5),
                     at(0.99), at(1.0));
}

class FloorRelay {
 public:
  FloorRelay(const std::string& host, std::uint16_t port, bool batch) : batch_(batch) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1 ||
        (ntohl(address.sin_addr.s_addr) >> 24) != 127) {
      throw std::runtime_error(fmt::format("--host {}: only IPv4 loopback addresses", host));
    }
    listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener_) fail_errno("socket");
    int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      fail_errno("bind");
    if (::listen(listener_.get(), 4096) != 0) fail_errno("listen");
    socklen_t length = sizeof address;
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);

    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) fail_errno("epoll_create1");
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    ::sigprocmask(SIG_BLOCK, &mask, nullptr);
    signals_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signals_) fail_errno("signalfd");
    add(listener_.get());
    add(signals_.get());
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

  void run() {
    std::vector<epoll_event> events(256);
    while (!stopping_) {
      int ready = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
      if (ready < 0) {
        if (errno == EINTR) continue;
        fail_errno("epoll_wait");
      }
      readable_.clear();
      for (int i = 0; i < ready; ++i) {
        int fd = events[static_cast<std::size_t>(i)].data.fd;
        if (fd == listener_.get())
          accept_all();
        else if (fd == signals_.get())
          stopping_ = true;
        else if (batch_)
          readable_.push_back(fd);
        else
          relay_from(fd);
      }
      if (!readable_.empty()) relay_batch();
    }
  }

  [[nodiscard]] const Counters& counters() const noexcept { return counters_; }
  [[nodiscard]] std::size_t clients() const noexcept { return order_.size(); }

 private:
  void add(int fd) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) fail_errno("epoll_ctl ADD");
  }

  void accept_all() {
    for (;;) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
        fail_errno("accept4");
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // as mux's sockets
      if (static_cast<std::size_t>(fd) >= slot_of_.size())
        slot_of_.resize(static_cast<std::size_t>(fd) + 1, kNoSlot);
      slot_of_[static_cast<std::size_t>(fd)] = order_.size();
      order_.emplace_back(fd);
      add(fd);
    }
  }

  // One read, then the same bytes to every other client, each with one send().
  void relay_from(int fd) {
    ssize_t got = ::recv(fd, buffer_, sizeof buffer_, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) return drop_client(fd);
    if (got < 0) return;
    ++counters_.reads;
    counters_.bytes_in += static_cast<std::uint64_t>(got);
    auto length = static_cast<std::size_t>(got);
    std::int64_t start = now_ns();
    for (const mux::Fd& receiver : order_) {
      if (receiver.get() == fd) continue;
      ssize_t sent = ::send(receiver.get(), buffer_, length, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent == static_cast<ssize_t>(length)) {
        ++counters_.deliveries;
        continue;
      }
      // EAGAIN, a short write or a dead peer: the rest is dropped (a dead peer is reaped when
      // its own EPOLLIN/HUP comes round).
      ++counters_.short_writes;
      counters_.dropped_bytes += length - static_cast<std::size_t>(sent > 0 ? sent : 0);
    }
    if (counters_.fan_out_ns.size() < kMaxTimings) counters_.fan_out_ns.push_back(now_ns() - start);
  }

  // --batch 1: one read from every readable socket, then one writev per receiver with every
  // chunk but its own, in the order they were read.
  void relay_batch() {
    struct Chunk {
      int from;
      std::size_t offset;
      std::size_t length;
    };
    std::vector<Chunk> chunks;
    std::size_t used = 0;
    for (int fd : readable_) {
      // A full buffer leaves the rest readable: level-triggered epoll reports them again.
      if (used == sizeof buffer_) break;
      ssize_t got = ::recv(fd, buffer_ + used, sizeof buffer_ - used, 0);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        drop_client(fd);
        continue;
      }
      if (got < 0) continue;
      ++counters_.reads;
      counters_.bytes_in += static_cast<std::uint64_t>(got);
      chunks.push_back({fd, used, static_cast<std::size_t>(got)});
      used += static_cast<std::size_t>(got);
    }
    if (chunks.empty()) return;
    std::int64_t start = now_ns();
    std::vector<iovec> iov(chunks.size());
    for (const mux::Fd& receiver : order_) {
      std::size_t count = 0;
      std::size_t length = 0;
      for (const Chunk& chunk : chunks) {
        if (chunk.from == receiver.get()) continue;
        iov[count++] = {buffer_ + chunk.offset, chunk.length};
        length += chunk.length;
      }
      if (count == 0) continue;
      ssize_t sent = ::writev(receiver.get(), iov.data(), static_cast<int>(count));
      if (sent == static_cast<ssize_t>(length)) {
        counters_.deliveries += count;
        continue;
      }
      ++counters_.short_writes;
      counters_.dropped_bytes += length - static_cast<std::size_t>(sent > 0 ? sent : 0);
    }
    if (counters_.fan_out_ns.size() < kMaxTimings) counters_.fan_out_ns.push_back(now_ns() - start);
  }

  void drop_client(int fd) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    std::size_t slot = slot_of_[static_cast<std::size_t>(fd)];
    slot_of_[static_cast<std::size_t>(fd)] = kNoSlot;
    // Keep the accept order of the others (a swap would change who is served first).
    order_.erase(order_.begin() + static_cast<std::ptrdiff_t>(slot));
    for (std::size_t i = slot; i < order_.size(); ++i)
      slot_of_[static_cast<std::size_t>(order_[i].get())] = i;
  }

  static constexpr std::size_t kNoSlot = SIZE_MAX;
  static constexpr std::size_t kMaxTimings = 1'000'000;  // bounded: 8 MB at most
  mux::Fd listener_;
  mux::Fd epoll_;
  mux::Fd signals_;
  std::vector<mux::Fd> order_;        // client sockets in accept order
  std::vector<std::size_t> slot_of_;  // fd -> index in order_
  char buffer_[64 * 1024];
  std::uint16_t port_ = 0;
  bool stopping_ = false;
  bool batch_ = false;
  std::vector<int> readable_;  // --batch 1: the client sockets readable in this epoll batch
  Counters counters_;
};

void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  bool batch = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    std::string_view value = argv[i + 1];
    if (flag == "--host") {
      host = value;
    } else if (flag == "--port") {
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), port);
      if (ec != std::errc{} || end != value.data() + value.size()) {
        fmt::print(stderr, "floor_relay: error: --port {}: not a port\n", value);
        return 2;
      }
    } else if (flag == "--batch") {
      batch = value == "1";
    } else {
      fmt::print(stderr, "usage: floor_relay [--host 127.0.0.1] [--port 0] [--batch 0|1]\n");
      return 2;
    }
  }
  if (argc % 2 == 0) {
    fmt::print(stderr, "usage: floor_relay [--host 127.0.0.1] [--port 0] [--batch 0|1]\n");
    return 2;
  }
  try {
    raise_fd_limit();
    FloorRelay relay(host, port, batch);
    fmt::print("listening on {}:{}\n", host, relay.port());
    std::fflush(stdout);
    relay.run();
    const Counters& c = relay.counters();
    fmt::print(stderr,
               "floor_relay: {} clients; {} reads, {} bytes in, {} deliveries, {} short writes, "
               "{} bytes dropped; {}\n",
               relay.clients(), c.reads, c.bytes_in, c.deliveries, c.short_writes, c.dropped_bytes,
               fan_out_summary(c.fan_out_ns));
    return 0;
  } catch (const std::exception& error) {
    fmt::print(stderr, "floor_relay: error: {}\n", error.what());
    return 1;
  }
}
