// Fd: the single owner of one file descriptor. Every fd mux opens lives in one of these, so
// closing is never forgotten and never done twice. Move-only; no implicit conversion to int,
// so handing the number to a syscall is always a visible get().
#pragma once

#include <utility>

namespace mux {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ~Fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Gives up ownership without closing; the caller now owns the number.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  // Closes what is held (if anything) and takes ownership of `fd`.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Sets or clears O_NONBLOCK; throws std::system_error on failure.
void set_nonblocking(int fd, bool on = true);

}  // namespace mux
