#include "core/service/service_manager.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include <fmt/format.h>

#include "core/loop/net.hpp"

#ifdef MUX_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace mux {
namespace {

#ifdef MUX_HAVE_LIBSYSTEMD
void notify(const std::string& state) {
  // unset_environment = 0: READY and STOPPING are both sent, from this same process.
  (void)::sd_notify(0, state.c_str());
}

void make_non_blocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
    throw std::runtime_error(
        fmt::format("socket activation: fd {}: cannot make it non-blocking", fd));
}
#endif

}  // namespace

bool has_service_manager_support() {
#ifdef MUX_HAVE_LIBSYSTEMD
  return true;
#else
  return false;
#endif
}

Fd take_listener(const std::string& host, std::uint16_t port, bool& activated) {
#ifdef MUX_HAVE_LIBSYSTEMD
  // unset_environment = 1: the fds are ours now; a program this process starts must not think
  // they are its own. sd_listen_fds() also sets FD_CLOEXEC on them.
  int count = ::sd_listen_fds(1);
  if (count < 0)
    throw std::runtime_error(
        fmt::format("socket activation: LISTEN_FDS: {}", std::strerror(-count)));
  if (count > 0) {
    int fd = SD_LISTEN_FDS_START;
    // Only the first socket is served; the rest are closed so they are not leaked.
    for (int extra = fd + 1; extra < fd + count; ++extra)
      Fd{extra}.reset();
    Fd listener{fd};
    if (::sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
      throw std::runtime_error(
          "socket activation: the socket passed (fd 3) is not a listening stream socket "
          "(ListenStream= in the .socket unit, Accept=no)");
    // Clients are told apart, capped and filtered by their IP address: a Unix socket has none.
    if (::sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0)
      throw std::runtime_error(fmt::format(
          "socket activation: the socket passed (fd 3) is {}, not TCP; mux serves TCP only "
          "(ListenStream=PORT or ADDRESS:PORT in the .socket unit)",
          local_address(fd)));
    make_non_blocking(fd);
    activated = true;
    return listener;
  }
#endif
  activated = false;
  return listen_tcp(host, port);
}

void notify_ready(std::string_view status) {
#ifdef MUX_HAVE_LIBSYSTEMD
  notify(fmt::format("READY=1\nSTATUS={}", status));
#else
  (void)status;
#endif
}

void notify_reloading() {
#ifdef MUX_HAVE_LIBSYSTEMD
  // MONOTONIC_USEC tells systemd which reload this is (it must be CLOCK_MONOTONIC, now).
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  auto usec = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000U +
              static_cast<std::uint64_t>(now.tv_nsec) / 1000U;
  notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
#endif
}

void notify_reloaded() {
#ifdef MUX_HAVE_LIBSYSTEMD
  notify("READY=1");
#endif
}

void notify_stopping(std::string_view status) {
#ifdef MUX_HAVE_LIBSYSTEMD
  notify(fmt::format("STOPPING=1\nSTATUS={}", status));
#else
  (void)status;
#endif
}

void forget_service_manager() {
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDNAMES");
}

}  // namespace mux
