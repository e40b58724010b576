#include "upload/upload_key.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "core/loop/fd.hpp"
#include "upload/content_hash.hpp"
#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

[[noreturn]] void fail(const std::string& where, int error) {
  throw std::runtime_error(
      fmt::format("upload key in {}: {}", where, std::generic_category().message(error)));
}

// mkdir -p with mode 700 for the parts it creates.
void make_directories(const std::string& path) {
  for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    std::string part = path.substr(0, slash);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) fail(path, errno);
    if (slash == std::string::npos) return;
  }
}

std::string random_key() {
  unsigned char bytes[kUploadKeyLength / 2];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "getrandom");
    got += static_cast<std::size_t>(n);
  }
  std::string key;
  for (unsigned char byte : bytes)
    key += fmt::format("{:02x}", byte);
  return key;
}

std::optional<std::string> read_key(const std::string& path) {
  Fd file(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!file) return std::nullopt;
  char text[kUploadKeyLength + 1] = {};
  ssize_t n = ::read(file.get(), text, sizeof text);
  if (n < static_cast<ssize_t>(kUploadKeyLength)) return std::nullopt;
  std::string key(text, kUploadKeyLength);
  if (!valid_upload_key(key)) return std::nullopt;
  return key;
}

}  // namespace

std::optional<std::string> upload_key_directory() {
  const char* state = std::getenv("XDG_STATE_HOME");
  if (state != nullptr && state[0] == '/') return fmt::format("{}/mux", state);
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] == '/') return fmt::format("{}/.local/state/mux", home);
  return std::nullopt;
}

UploadKey upload_key_for(const std::string& server, int file_fd, const std::string& name) {
  std::optional<std::string> directory = upload_key_directory();
  if (!directory) {
    throw std::runtime_error("upload key: neither XDG_STATE_HOME nor HOME is set");
  }
  struct stat info {};
  if (::fstat(file_fd, &info) != 0) fail(*directory, errno);
  std::string identity =
      fmt::format("{}\n{}:{}\n{}", server, info.st_dev, info.st_ino, percent_encode(name));
  ContentHash hash;
  hash.update(identity.data(), identity.size());
  std::string path = fmt::format("{}/upload-{}", *directory, hash.hex());
  if (std::optional<std::string> key = read_key(path)) return UploadKey{*key, path, true};
  make_directories(*directory);
  std::string key = random_key();
  // Written whole under a temporary name, then renamed: a key file is never half there.
  std::string temp = fmt::format("{}.{}.tmp", path, ::getpid());
  {
    Fd file(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!file) fail(*directory, errno);
    std::string line = key + "\n";
    if (::write(file.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      int error = errno;
      ::unlink(temp.c_str());
      fail(*directory, error);
    }
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int error = errno;
    ::unlink(temp.c_str());
    fail(*directory, error);
  }
  return UploadKey{key, path, false};
}

void forget_upload_key(const UploadKey& key) {
  (void)::unlink(key.path.c_str());
}

}  // namespace mux
