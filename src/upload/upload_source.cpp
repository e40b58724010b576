#include "upload/upload_source.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>
#include <vector>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr std::size_t kSpoolChunk = 1 << 20;

[[noreturn]] void throw_path_error(const std::string& path, int error) {
  throw std::runtime_error(fmt::format("{}: {}", path, std::generic_category().message(error)));
}

std::string base_name(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/')
    trimmed.pop_back();
  std::size_t slash = trimmed.rfind('/');
  return slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
}

Fd open_spool_file() {
  const char* tmpdir = std::getenv("TMPDIR");
  std::string dir = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
  Fd file(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (file) return file;
  // A filesystem without O_TMPFILE: a named file, unlinked at once.
  std::string name = dir + "/mux-upload-XXXXXX";
  file.reset(::mkostemp(name.data(), O_CLOEXEC));
  if (!file) throw_path_error(fmt::format("temporary file in {}", dir), errno);
  ::unlink(name.c_str());
  return file;
}

void write_all(int fd, const char* data, std::size_t length, const std::string& what) {
  while (length > 0) {
    ssize_t written = ::write(fd, data, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_path_error(what, errno);
    }
    data += written;
    length -= static_cast<std::size_t>(written);
  }
}

// Copies everything `input` yields into an unnamed temporary file and returns it.
UploadSource spool(int input, const std::string& path, std::string default_name) {
  Fd spool_file = open_spool_file();
  std::vector<char> buffer(kSpoolChunk);
  std::uint64_t size = 0;
  while (true) {
    ssize_t got = ::read(input, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_path_error(path, errno);
    }
    if (got == 0) break;
    write_all(spool_file.get(), buffer.data(), static_cast<std::size_t>(got), "copy of " + path);
    size += static_cast<std::uint64_t>(got);
  }
  return UploadSource{std::move(spool_file), 0, size, std::move(default_name)};
}

}  // namespace

UploadSource open_upload_source(const std::string& path) {
  bool from_stdin = path == "-";
  std::string shown = from_stdin ? "standard input" : path;
  Fd file(from_stdin ? ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3)
                     : ::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) throw_path_error(shown, errno);
  struct stat info {};
  if (::fstat(file.get(), &info) < 0) throw_path_error(shown, errno);
  if (S_ISDIR(info.st_mode)) throw_path_error(shown, EISDIR);
  std::string default_name = from_stdin ? "stdin" : base_name(path);
  if (!S_ISREG(info.st_mode)) return spool(file.get(), shown, std::move(default_name));
  off_t start = from_stdin ? ::lseek(file.get(), 0, SEEK_CUR) : 0;
  if (start < 0 || start > info.st_size) start = info.st_size;
  return UploadSource{std::move(file), static_cast<std::uint64_t>(start),
                      static_cast<std::uint64_t>(info.st_size - start), std::move(default_name)};
}

}  // namespace mux
