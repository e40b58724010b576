#include "core/loop/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include <fmt/format.h>

namespace mux {
namespace {

struct AddrinfoDeleter {
  void operator()(addrinfo* list) const noexcept { ::freeaddrinfo(list); }
};
using AddrinfoList = std::unique_ptr<addrinfo, AddrinfoDeleter>;

AddrinfoList resolve(const std::string& host, std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG | (passive ? AI_PASSIVE : 0);
  std::string service = std::to_string(port);
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  if (rc == EAI_ADDRFAMILY || rc == EAI_NONAME) {
    // AI_ADDRCONFIG hides ::1 on hosts without a global IPv6 address; loopback still works.
    hints.ai_flags &= ~AI_ADDRCONFIG;
    rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
  }
  if (rc != 0) {
    std::string why =
        rc == EAI_SYSTEM ? std::generic_category().message(errno) : ::gai_strerror(rc);
    throw std::runtime_error(fmt::format("resolve {}: {}", format_endpoint(host, port), why));
  }
  return AddrinfoList(list);
}

}  // namespace

std::string format_endpoint(const std::string& host, std::uint16_t port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

namespace {

std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

}  // namespace

std::optional<HostAndPort> split_host_port(const std::string& text, std::string& why) {
  if (text.empty()) {
    why = "an empty host";
    return std::nullopt;
  }
  std::string_view rest = text;
  HostAndPort result;
  if (rest.front() == '[') {
    std::size_t close = rest.find(']');
    if (close == std::string_view::npos || close == 1) {
      why = "expected [IPv6 address] or [IPv6 address]:PORT";
      return std::nullopt;
    }
    result.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
    if (rest.empty()) return result;
    if (rest.front() != ':') {
      why = "expected :PORT after ]";
      return std::nullopt;
    }
    rest.remove_prefix(1);
  } else {
    std::size_t colon = rest.find(':');
    // Two colons or more without brackets: a bare IPv6 address, no port.
    if (colon == std::string_view::npos || rest.find(':', colon + 1) != std::string_view::npos) {
      result.host = text;
      return result;
    }
    result.host = std::string(rest.substr(0, colon));
    rest.remove_prefix(colon + 1);
    if (result.host.empty()) {
      why = "no host before :PORT";
      return std::nullopt;
    }
  }
  result.port = parse_port(rest);
  if (!result.port) {
    why = fmt::format("'{}' is not a port number (0-65535)", rest);
    return std::nullopt;
  }
  return result;
}

std::string format_address(const sockaddr* address, socklen_t length) {
  if (address->sa_family == AF_UNIX) {
    // A path, or an abstract name (a leading NUL, shown as '@' as ss does), or none at all.
    const auto* local = reinterpret_cast<const sockaddr_un*>(address);
    auto offset = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path));
    if (length <= offset) return "a Unix socket";
    std::string path(local->sun_path, static_cast<std::size_t>(length - offset));
    if (path.front() == '\0') path.front() = '@';
    while (!path.empty() && path.back() == '\0')
      path.pop_back();
    return "a Unix socket (" + path + ")";
  }
  char host[NI_MAXHOST];
  char service[NI_MAXSERV];
  if (::getnameinfo(address, length, host, sizeof host, service, sizeof service,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return format_endpoint(host, static_cast<std::uint16_t>(std::stoul(service)));
}

std::string local_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&address), length);
}

bool is_loopback_socket(int fd, bool peer) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  auto* address = reinterpret_cast<sockaddr*>(&storage);
  if ((peer ? ::getpeername(fd, address, &length) : ::getsockname(fd, address, &length)) != 0)
    return false;
  if (storage.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  if (storage.ss_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  return storage.ss_family == AF_UNIX;
}

std::string peer_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) < 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&address), length);
}

Fd listen_tcp(const std::string& host, std::uint16_t port, int backlog) {
  AddrinfoList list = resolve(host, port, true);
  int last_error = EADDRNOTAVAIL;
  for (addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      last_error = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd.get(), backlog) < 0) {
      last_error = errno;
      continue;
    }
    return fd;
  }
  throw std::system_error(last_error, std::generic_category(),
                          fmt::format("listen on {}", format_endpoint(host, port)));
}

SocketPair make_socket_pair() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) < 0)
    throw std::system_error(errno, std::generic_category(), "socketpair");
  return {Fd(ends[0]), Fd(ends[1])};
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_keepalive(int fd, int idle_seconds, int interval_seconds, int probes) {
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_seconds, sizeof idle_seconds);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_seconds, sizeof interval_seconds);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

std::vector<SocketAddress> resolve_tcp(const std::string& host, std::uint16_t port) {
  AddrinfoList list = resolve(host, port, false);
  std::vector<SocketAddress> addresses;
  for (addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    SocketAddress address;
    std::memcpy(&address.storage, ai->ai_addr, ai->ai_addrlen);
    address.length = ai->ai_addrlen;
    addresses.push_back(address);
  }
  return addresses;
}

Acceptor::Acceptor(Fd listener)
    : listener_(std::move(listener)), reserve_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {}

std::optional<Acceptor::Accepted> Acceptor::accept(bool& dropped) {
  dropped = false;
  while (true) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    int fd = ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&address), &length,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Accepted accepted{Fd(fd), format_address(reinterpret_cast<sockaddr*>(&address), length), {}};
      accepted.address.storage = address;
      accepted.address.length = length;
      return accepted;
    }
    switch (errno) {
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
        continue;  // that one connection is gone; try the next
      case EMFILE:
      case ENFILE:
        if (reserve_) {
          reserve_.reset();
          Fd doomed(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
          doomed.reset();
          reserve_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
          dropped = true;
        }
        return std::nullopt;
      default:  // EAGAIN, or a transient network error reported early: wait for the next event
        return std::nullopt;
    }
  }
}

std::uint64_t fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) < 0) return 1024;
  return limit.rlim_cur;
}

std::uint64_t raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  return fd_limit();
}

void ignore_sigpipe() {
  struct sigaction action {};
  action.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &action, nullptr);
}

}  // namespace mux
