#include "core/access/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <fmt/format.h>

#include "core/loop/fd.hpp"

namespace mux {

std::string read_secret_file(std::string_view flag, const std::string& path,
                             std::size_t max_bytes) {
  auto refuse = [&](std::string_view why) {
    return SecretFileError(fmt::format("{} {}: {}", flag, path, why));
  };
  auto system_error = [&] { return refuse(std::generic_category().message(errno)); };
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!file) throw system_error();
  struct stat status {};
  if (::fstat(file.get(), &status) != 0) throw system_error();
  if (!S_ISREG(status.st_mode)) throw refuse("not a regular file");
  if ((status.st_mode & 077) != 0)
    throw refuse(fmt::format("group or others can access it (mode {:04o}); run: chmod 600 {}",
                             status.st_mode & 07777, path));
  if (status.st_uid != ::geteuid() && status.st_uid != 0)
    throw refuse(fmt::format("owned by uid {}, not by this user (uid {}) or root; run: chown {} {}",
                             status.st_uid, ::geteuid(), ::geteuid(), path));
  std::string content;
  char chunk[8192];
  for (;;) {
    ssize_t got = ::read(file.get(), chunk, sizeof chunk);
    if (got == 0) return content;
    if (got < 0) {
      if (errno == EINTR) continue;
      throw system_error();
    }
    content.append(chunk, static_cast<std::size_t>(got));
    if (content.size() > max_bytes) throw refuse(fmt::format("larger than {} bytes", max_bytes));
  }
}

}  // namespace mux
