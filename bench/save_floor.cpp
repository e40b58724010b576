// save_floor: the floor saved uploads are held to in bench/run. The least work an upload over
// loopback TCP can do when both ends hash the bytes, as mux does: one sender and one receiver,
// each a single thread in its own process (and its own session, so its own scheduling group, as
// bench/run starts mux's client and server). The sender preads 1 MiB chunks of the file from the
// page cache, hashes each (XXH3-128 through mux's own ContentHash) and sends it; the
// receiver recvs 1 MiB, hashes it and writes it into a new file. At the sender's half-close the
// receiver replies with its hash and the sender compares. No header, no event loop, no progress,
// no reservation, no rename, no read-ahead thread: the difference between mux and this is what
// mux's structure costs, and the difference between this and cp is what any hashed TCP upload
// costs on this machine.
//
//   save_floor --file SRC --output DST    prints {"bytes": N, "seconds": S}, exit 0 if the hashes
//                                         agree; DST must not exist (it is left for the caller)
//
// Loopback only.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "core/loop/fd.hpp"
#include "upload/content_hash.hpp"

namespace {

constexpr std::size_t kChunk = 1 << 20;  // what mux's client and server use

[[noreturn]] void fail(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void send_all(int fd, const char* data, std::size_t length) {
  while (length > 0) {
    ssize_t sent = ::send(fd, data, length, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      fail("send");
    }
    data += sent;
    length -= static_cast<std::size_t>(sent);
  }
}

// The receiving process: accept one connection, recv + hash + write until EOF, reply the hash.
int receive(mux::Fd listener, const char* output) {
  mux::Fd socket(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!socket) fail("accept");
  listener.reset();
  mux::Fd file(::open(output, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!file) fail(output);
  std::vector<char> buffer(kChunk);
  mux::ContentHash hash;
  while (true) {
    ssize_t got = ::recv(socket.get(), buffer.data(), buffer.size(), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("recv");
    if (got == 0) break;
    hash.update(buffer.data(), static_cast<std::size_t>(got));
    for (ssize_t done = 0; done < got;) {
      ssize_t written =
          ::write(file.get(), buffer.data() + done, static_cast<std::size_t>(got - done));
      if (written < 0 && errno == EINTR) continue;
      if (written < 0) fail("write");
      done += written;
    }
  }
  std::string reply = hash.hex() + "\n";
  send_all(socket.get(), reply.data(), reply.size());
  return 0;
}

// The sending process: pread + hash + send, half-close, compare the reply.
int send_file(int port, const char* source) {
  mux::Fd file(::open(source, O_RDONLY | O_CLOEXEC));
  if (!file) fail(source);
  struct stat info {};
  if (::fstat(file.get(), &info) < 0) fail("fstat");
  auto size = static_cast<std::uint64_t>(info.st_size);
  mux::Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto started = std::chrono::steady_clock::now();
  if (::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) < 0) {
    fail("connect");
  }
  std::vector<char> buffer(kChunk);
  mux::ContentHash hash;
  for (std::uint64_t done = 0; done < size;) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
    ssize_t got = ::pread(file.get(), buffer.data(), want, static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) fail("pread");
    hash.update(buffer.data(), static_cast<std::size_t>(got));
    send_all(socket.get(), buffer.data(), static_cast<std::size_t>(got));
    done += static_cast<std::uint64_t>(got);
  }
  if (::shutdown(socket.get(), SHUT_WR) < 0) fail("shutdown");
  std::string reply;
  char text[64];
  ssize_t got;
  while ((got = ::recv(socket.get(), text, sizeof text, 0)) > 0)
    reply.append(text, static_cast<std::size_t>(got));
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (reply != hash.hex() + "\n") {
    std::fprintf(stderr, "save_floor: the receiver's hash differs: %s\n", reply.c_str());
    return 1;
  }
  std::printf("{\"bytes\": %llu, \"seconds\": %.6f}\n", static_cast<unsigned long long>(size),
              seconds);
  return 0;
}

int run(int argc, char** argv) {
  const char* source = nullptr;
  const char* output = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--file") == 0) source = argv[i + 1];
    if (std::strcmp(argv[i], "--output") == 0) output = argv[i + 1];
  }
  if (source == nullptr || output == nullptr) {
    std::fprintf(stderr, "usage: save_floor --file SRC --output DST\n");
    return 2;
  }
  mux::Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) < 0 ||
      ::listen(listener.get(), 1) < 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length) < 0) {
    fail("listen");
  }
  pid_t receiver = ::fork();
  if (receiver < 0) fail("fork");
  if (receiver == 0) {
    ::setsid();  // its own scheduling group, as mux's server has
    try {
      std::_Exit(receive(std::move(listener), output));
    } catch (const std::exception& error) {
      std::fprintf(stderr, "save_floor receiver: %s\n", error.what());
      std::_Exit(1);
    }
  }
  listener.reset();
  int status = send_file(ntohs(address.sin_port), source);
  int receiver_status = 0;
  while (::waitpid(receiver, &receiver_status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(receiver_status) || WEXITSTATUS(receiver_status) != 0) return 1;
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "save_floor: %s\n", error.what());
    return 1;
  }
}
