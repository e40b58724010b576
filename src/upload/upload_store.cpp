#include "upload/upload_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <charconv>
#include <csignal>
#include <memory>
#include <optional>

#include <cerrno>
#include <cstdio>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr int kMaxNameAttempts = 10000;
constexpr int kCreateFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
// Saved uploads are ordinary files: the umask decides, as for any file a program creates.
constexpr mode_t kFileMode = 0666;

constexpr std::string_view kPartialPrefix = ".mux-upload-";
constexpr std::string_view kPartialSuffix = ".part";

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

// The owner pid in ".mux-upload-<pid>-<client>[-<attempt>].part", or nullopt for any other name.
std::optional<pid_t> partial_owner(std::string_view name) {
  if (!name.starts_with(kPartialPrefix) || !name.ends_with(kPartialSuffix)) return std::nullopt;
  name.remove_prefix(kPartialPrefix.size());
  pid_t pid = 0;
  auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), pid);
  if (error != std::errc() || pid <= 0 || end == name.data() + name.size() || *end != '-') {
    return std::nullopt;
  }
  return pid;
}

bool process_is_gone(pid_t pid) {
  // EPERM means it runs under another user: alive, and not ours to judge.
  return pid == ::getpid() || (::kill(pid, 0) < 0 && errno == ESRCH);
}

}  // namespace

PartialFile::PartialFile(int dir_fd, std::string temp_name, Fd file) noexcept
    : dir_fd_(dir_fd), temp_name_(std::move(temp_name)), file_(std::move(file)) {}

PartialFile::PartialFile(PartialFile&& other) noexcept
    : dir_fd_(other.dir_fd_),
      temp_name_(std::exchange(other.temp_name_, {})),
      file_(std::move(other.file_)) {}

PartialFile::~PartialFile() {
  if (!temp_name_.empty()) ::unlinkat(dir_fd_, temp_name_.c_str(), 0);
}

int PartialFile::append(const char* data, std::size_t length) {
  while (length > 0) {
    ssize_t written = ::write(file_.get(), data, length);
    if (written < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data += written;
    length -= static_cast<std::size_t>(written);
  }
  return 0;
}

int PartialFile::reserve(std::uint64_t end) {
  if (!can_reserve_) return 0;
  int rc;
  do {
    rc = ::fallocate(file_.get(), 0, 0, static_cast<off_t>(end));
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return 0;
  if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
    can_reserve_ = false;
    return 0;
  }
  return errno;
}

int PartialFile::truncate(std::uint64_t length) {
  if (::ftruncate(file_.get(), static_cast<off_t>(length)) == 0) return 0;
  return errno;
}

bool PartialFile::link_without_replacing(const std::string& target) {
  if (::renameat2(dir_fd_, temp_name_.c_str(), dir_fd_, target.c_str(), RENAME_NOREPLACE) == 0) {
    return true;
  }
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) throw_errno(errno, fmt::format("rename to {}", target));
  // A filesystem without RENAME_NOREPLACE: link(2) refuses an existing target just as atomically.
  if (::linkat(dir_fd_, temp_name_.c_str(), dir_fd_, target.c_str(), 0) < 0) {
    if (errno == EEXIST) return false;
    throw_errno(errno, fmt::format("link to {}", target));
  }
  ::unlinkat(dir_fd_, temp_name_.c_str(), 0);
  return true;
}

std::string PartialFile::commit(std::string_view name) {
  for (int attempt = 0; attempt < kMaxNameAttempts; ++attempt) {
    std::string target = attempt == 0 ? std::string(name) : fmt::format("{}.{}", name, attempt);
    if (link_without_replacing(target)) {
      temp_name_.clear();
      return target;
    }
  }
  throw_errno(EEXIST, fmt::format("save as {}", name));
}

OutputDirectory::OutputDirectory(std::string path) : path_(std::move(path)) {
  std::string what = fmt::format("--output-dir {}", path_);
  dir_.reset(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_) throw_errno(errno, what);
  // access(2) would say yes to root on a read-only mount; creating a file is the real test.
  std::string probe = fmt::format(".mux-probe-{}", ::getpid());
  Fd probe_file(::openat(dir_.get(), probe.c_str(), kCreateFlags, kFileMode));
  if (!probe_file) throw_errno(errno, what);
  ::unlinkat(dir_.get(), probe.c_str(), 0);
}

std::string OutputDirectory::path_of(std::string_view name) const {
  if (!path_.empty() && path_.back() == '/') return fmt::format("{}{}", path_, name);
  return fmt::format("{}/{}", path_, name);
}

PartialFile OutputDirectory::create_partial(std::uint64_t client_number) const {
  for (int attempt = 0;; ++attempt) {
    std::string name = attempt == 0 ? fmt::format("{}{}-{}{}", kPartialPrefix, ::getpid(),
                                                  client_number, kPartialSuffix)
                                    : fmt::format("{}{}-{}-{}{}", kPartialPrefix, ::getpid(),
                                                  client_number, attempt, kPartialSuffix);
    Fd file(::openat(dir_.get(), name.c_str(), kCreateFlags, kFileMode));
    if (file) return PartialFile(dir_.get(), std::move(name), std::move(file));
    // Left behind by an earlier server that was killed with this pid: pick another name.
    if (errno != EEXIST || attempt >= kMaxNameAttempts) throw_errno(errno, "create temporary file");
  }
}

}  // namespace mux

namespace mux {

std::size_t OutputDirectory::remove_partials_if(const std::function<bool(pid_t)>& is_dead) const {
  // A second descriptor: readdir moves the offset of the one it reads, and dir_ is shared.
  Fd listing(::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!listing) return 0;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(listing.get()), ::closedir);
  if (!dir) return 0;
  (void)listing.release();  // closedir closes it now
  std::size_t removed = 0;
  while (dirent* entry = ::readdir(dir.get())) {
    std::optional<pid_t> owner = partial_owner(entry->d_name);
    if (owner && is_dead(*owner) && ::unlinkat(dir_.get(), entry->d_name, 0) == 0) ++removed;
  }
  return removed;
}

std::size_t OutputDirectory::remove_partials_of(pid_t pid) const {
  return remove_partials_if([pid](pid_t owner) { return owner == pid; });
}

std::size_t OutputDirectory::remove_stale_partials() const {
  return remove_partials_if(process_is_gone);
}

std::uint64_t OutputDirectory::free_bytes() const {
  struct statvfs stats {};
  if (::fstatvfs(dir_.get(), &stats) != 0) return UINT64_MAX;  // unknown: do not refuse
  return static_cast<std::uint64_t>(stats.f_bavail) * stats.f_frsize;
}

}  // namespace mux
