// ByteStream: how a connection moves bytes over its socket. PlainStream is the kernel's TCP; a TLS
// stream (OpenSSL) implements the same calls, so chat/ and upload/ never know which one they talk
// through. Everything is non-blocking: a call that cannot progress returns would_block, and
// wants() says which readiness (EPOLLIN, EPOLLOUT or both) lets it progress — a TLS write may
// need the socket readable during a handshake, and a TLS read may need it writable.
// The stream does not own the fd: the Connection that owns the stream owns the socket too.
#pragma once

#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace mux {

struct IoResult {
  enum class Status : std::uint8_t {
    done,           // `bytes` moved (may be fewer than asked: a short write)
    would_block,    // nothing moved; wait for wants()
    end_of_stream,  // the peer closed its sending side (read only)
    failed,         // `error` holds an errno value; `detail` may say more (TLS alerts)
  };
  Status status = Status::done;
  std::size_t bytes = 0;
  int error = 0;
  std::string detail;

  [[nodiscard]] bool ok() const noexcept { return status == Status::done; }
  [[nodiscard]] bool blocked() const noexcept { return status == Status::would_block; }
  // "Connection reset by peer", or the stream's own detail when it has one.
  [[nodiscard]] std::string describe() const;

  static IoResult moved(std::size_t bytes) { return {Status::done, bytes, 0, {}}; }
  static IoResult blocked_on() { return {Status::would_block, 0, 0, {}}; }
  static IoResult end() { return {Status::end_of_stream, 0, 0, {}}; }
  static IoResult failure(int error, std::string detail = {}) {
    return {Status::failed, 0, error, std::move(detail)};
  }
};

class ByteStream {
 public:
  ByteStream() = default;
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;
  virtual ~ByteStream() = default;

  // Drives the opening handshake; `done` once application bytes can flow. Plain TCP has none.
  virtual IoResult handshake() = 0;
  virtual IoResult read(char* data, std::size_t size) = 0;
  virtual IoResult writev(const iovec* chunks, int count) = 0;
  // Ends our sending direction after what was written: FIN for TCP, close_notify then FIN for TLS.
  // would_block means call again when wants() is ready.
  virtual IoResult shutdown_write() = 0;
  // The readiness the last would_block waits for.
  [[nodiscard]] virtual std::uint32_t wants() const = 0;
  // Input already taken off the socket and held inside the stream (TLS records decrypted ahead):
  // readable now even though epoll will not say so.
  [[nodiscard]] virtual bool has_buffered_input() const { return false; }
  // After read() reported the end: it came without the protocol's own end mark (TLS: a bare FIN,
  // no close_notify), so whoever cut the connection may have cut the data too. Plain TCP has no
  // such mark: its FIN is the end.
  [[nodiscard]] virtual bool end_was_unmarked() const { return false; }
  [[nodiscard]] virtual int fd() const noexcept = 0;
  // The socket was duplicated to `fd` (a fork-mode child moving a connection it inherited to a
  // low number): every later call goes through it. The stream's state (a TLS session) is kept.
  virtual void renumber(int fd) noexcept = 0;
};

// The kernel's TCP (or any stream socket) on `fd`, which the caller keeps owning.
std::unique_ptr<ByteStream> make_plain_stream(int fd);

}  // namespace mux
