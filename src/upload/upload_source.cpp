#include "upload/upload_source.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr int kPipeBuffer = 1 << 20;

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

// A bigger pipe buffer lets a fast writer hand over up to a whole chunk per read instead of 64 KiB;
// refused (beyond /proc/sys/fs/pipe-max-size, or not a pipe) it changes nothing.
void enlarge_pipe(int fd) {
  (void)::fcntl(fd, F_SETPIPE_SZ, kPipeBuffer);
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
  if (!S_ISREG(info.st_mode)) {
    if (S_ISFIFO(info.st_mode)) enlarge_pipe(file.get());
    return UploadSource{std::move(file), 0, std::nullopt, std::move(default_name)};
  }
  off_t start = from_stdin ? ::lseek(file.get(), 0, SEEK_CUR) : 0;
  if (start < 0 || start > info.st_size) start = info.st_size;
  return UploadSource{std::move(file), static_cast<std::uint64_t>(start),
                      static_cast<std::uint64_t>(info.st_size - start), std::move(default_name)};
}

}  // namespace mux
