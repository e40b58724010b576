// TCP helpers shared by every subcommand: resolve, listen, connect and accept over IPv4 or IPv6,
// with errors that name the address ("listen on 127.0.0.1:5000: Address already in use").
// Sockets come back CLOEXEC and non-blocking.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/loop/fd.hpp"

namespace mux {

// "127.0.0.1:5000", "[::1]:5000": how addresses appear in logs and errors.
std::string format_endpoint(const std::string& host, std::uint16_t port);
std::string format_address(const sockaddr* address, socklen_t length);
std::string local_address(int fd);
std::string peer_address(int fd);
// Whether the socket's own (or its peer's) address is a loopback one: 127.0.0.0/8, ::1, or
// 127.x as an IPv4-mapped IPv6 address. False when the address cannot be read.
bool is_loopback_socket(int fd, bool peer);

// What a client's --host may say: "HOST", "HOST:PORT", "::1" (a bare IPv6 address), "[::1]" or
// "[::1]:PORT", as ssh and curl users type them. nullopt for a malformed one ("[::1", "host:",
// "host:99999", "[::1]x"), with `why` saying what is wrong.
struct HostAndPort {
  std::string host;
  std::optional<std::uint16_t> port;
};
std::optional<HostAndPort> split_host_port(const std::string& text, std::string& why);

// Binds and listens on the first address `host` resolves to. Port 0 picks a free port.
Fd listen_tcp(const std::string& host, std::uint16_t port, int backlog = 4096);
// Two connected non-blocking CLOEXEC Unix stream sockets: the fork modes' parent-child link.
// Throws std::system_error ("socketpair: Too many open files").
struct SocketPair {
  Fd first;
  Fd second;
};
SocketPair make_socket_pair();

void set_nodelay(int fd);

// TCP keepalive, so a peer that vanished (cable pulled, machine gone) is found: the first probe
// after `idle_seconds` without traffic, then one every `interval_seconds`, `probes` unanswered
// ones end the connection (reads fail with ETIMEDOUT). Best effort: errors are ignored.
void set_keepalive(int fd, int idle_seconds, int interval_seconds, int probes);

// One resolved address of a name, as connect() wants it.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
};
// Every address `host`:`port` resolves to (blocking getaddrinfo: a name lookup, instant for
// numeric addresses). Throws std::runtime_error naming the endpoint when none does.
std::vector<SocketAddress> resolve_tcp(const std::string& host, std::uint16_t port);

// Accepts connections without letting fd exhaustion spin the loop: when accept fails with
// EMFILE/ENFILE, a reserved fd is given up to take the pending connection off the queue and close
// it at once, then reserved again (the pending connection would otherwise keep the listener
// readable forever).
class Acceptor {
 public:
  struct Accepted {
    Fd fd;
    std::string peer;  // "127.0.0.1:40000", for logs
    SocketAddress address;
  };
  explicit Acceptor(Fd listener);

  [[nodiscard]] int fd() const noexcept { return listener_.get(); }
  // Next pending connection, or nullopt when none is left (EAGAIN) or it had to be dropped.
  // `dropped` is set when a connection was refused for lack of fds.
  std::optional<Accepted> accept(bool& dropped);
  // Closes the listening socket (fork-mode children, shutdown).
  void close() noexcept { listener_.reset(); }

 private:
  Fd listener_;
  Fd reserve_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
std::uint64_t raise_fd_limit();
std::uint64_t fd_limit();

// Writes to a closed socket must return EPIPE, not kill mux.
void ignore_sigpipe();

}  // namespace mux
