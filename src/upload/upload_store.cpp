#include "upload/upload_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <charconv>
#include <csignal>
#include <memory>
#include <optional>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <limits>
#include <memory>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/event_loop.hpp"
#include "core/threads.hpp"

namespace mux {
namespace {

constexpr int kMaxTempNameAttempts = 10000;
// Each try at a suffix that fails means another upload (or process) took that name in between;
// every such failure is someone else's progress, so this bound is only reached under a storm of
// same-name uploads from many processes at once, and then the upload fails instead of spinning.
constexpr int kMaxClaimRounds = 1000;
constexpr int kCreateFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
// Saved uploads are ordinary files: the umask decides, as for any file a program creates.
constexpr mode_t kFileMode = 0666;
// --sync full hands the data to the disk in windows of this size as it arrives, so the fdatasync
// before OK only waits for the last window, and drops windows already written from the page cache
// so one big upload does not push everything else out of memory.
constexpr std::uint64_t kWritebackWindow = 8 << 20;
// A power of two; 64 KiB of shared memory. Names beyond that many share slots, which only makes
// their hints less useful.
constexpr std::size_t kHintSlots = 4096;

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

std::uint64_t name_hash(std::string_view name) noexcept {
  // 0 marks an empty slot.
  return std::hash<std::string_view>{}(name) | 1;
}

std::string suffixed(std::string_view name, std::uint64_t suffix) {
  return fmt::format("{}.{}", name, suffix);
}

void sync_or_throw(int fd, bool data_only, const std::string& what) {
  int rc;
  do {
    rc = data_only ? ::fdatasync(fd) : ::fsync(fd);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw_errno(errno, what);
}

}  // namespace

const char* to_string(SyncMode mode) noexcept {
  return mode == SyncMode::full ? "full" : "none";
}

// --- SuffixHints ---------------------------------------------------------------------------------

SuffixHints::SuffixHints() {
  void* memory = ::mmap(nullptr, sizeof(Slot) * kHintSlots, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw_errno(errno, "mmap for file name hints");
  slots_ = static_cast<Slot*>(memory);
  std::uninitialized_value_construct_n(slots_, kHintSlots);
}

SuffixHints::~SuffixHints() {
  std::destroy_n(slots_, kHintSlots);
  ::munmap(slots_, sizeof(Slot) * kHintSlots);
}

SuffixHints::Slot& SuffixHints::slot_for(std::uint64_t hash) const noexcept {
  return slots_[hash & (kHintSlots - 1)];
}

std::uint64_t SuffixHints::next_for(std::string_view name) const noexcept {
  std::uint64_t hash = name_hash(name);
  const Slot& slot = slot_for(hash);
  if (slot.name_hash.load(std::memory_order_relaxed) != hash) return 0;
  return slot.next.load(std::memory_order_relaxed);
}

void SuffixHints::remember(std::string_view name, std::uint64_t next) const noexcept {
  std::uint64_t hash = name_hash(name);
  Slot& slot = slot_for(hash);
  slot.name_hash.store(hash, std::memory_order_relaxed);
  slot.next.store(next, std::memory_order_relaxed);
}

// --- PartialFile ---------------------------------------------------------------------------------

PartialFile::PartialFile(int dir_fd, std::string temp_name, Fd file, SyncMode sync) noexcept
    : dir_fd_(dir_fd), temp_name_(std::move(temp_name)), file_(std::move(file)), sync_(sync) {}

PartialFile::PartialFile(PartialFile&& other) noexcept
    : dir_fd_(other.dir_fd_),
      temp_name_(std::exchange(other.temp_name_, {})),
      file_(std::move(other.file_)),
      sync_(other.sync_),
      can_reserve_(other.can_reserve_),
      written_(other.written_),
      writeback_started_(other.writeback_started_) {}

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
    written_ += static_cast<std::uint64_t>(written);
  }
  if (sync_ == SyncMode::full) start_writeback();
  return 0;
}

void PartialFile::start_writeback() {
  if (written_ - writeback_started_ < kWritebackWindow) return;
  std::uint64_t end = written_ - written_ % kWritebackWindow;
  // Starts the write-back without waiting for it (the loop must not wait for the disk); errors
  // show up in the fdatasync before OK, so they are not checked here.
  (void)::sync_file_range(file_.get(), static_cast<off_t>(writeback_started_),
                          static_cast<off_t>(end - writeback_started_), SYNC_FILE_RANGE_WRITE);
  // The window before the one just started has most likely reached the disk: drop its clean
  // pages. Pages still being written stay cached, and DONTNEED never waits for them.
  if (writeback_started_ >= kWritebackWindow) {
    (void)::posix_fadvise(file_.get(), static_cast<off_t>(writeback_started_ - kWritebackWindow),
                          static_cast<off_t>(kWritebackWindow), POSIX_FADV_DONTNEED);
  }
  writeback_started_ = end;
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

bool PartialFile::rename_without_replacing(const std::string& target) {
  // Neither call follows a symlink at `target`: an existing entry of any kind, a dangling symlink
  // included, is EEXIST.
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

bool PartialFile::name_taken(const std::string& target) const {
  struct stat info {};
  if (::fstatat(dir_fd_, target.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno(errno, fmt::format("look up {}", target));
}

std::string PartialFile::claim_suffixed_name(std::string_view name, const SuffixHints& hints) {
  // Trying name.1, name.2, ... one rename at a time made the n-th copy of a name cost n renames.
  // Instead start where the last copy of this name ended (the hint), and when that is wrong,
  // look ahead 1, 2, 4, 8... suffixes for a free one and bisect back to the first free one after
  // a taken one: O(1) renames with a good hint, O(log n) lookups without one.
  std::uint64_t start = std::max<std::uint64_t>(hints.next_for(name), 1);
  for (int round = 0; round < kMaxClaimRounds; ++round) {
    std::uint64_t free = start;
    if (name_taken(suffixed(name, start))) {
      std::uint64_t taken = start;
      std::uint64_t step = 1;
      free = start + step;
      while (name_taken(suffixed(name, free))) {
        taken = free;
        if (step > std::numeric_limits<std::uint64_t>::max() / 4) throw_errno(EEXIST, "save");
        step *= 2;
        free = start + step;
      }
      while (free - taken > 1) {
        std::uint64_t middle = taken + (free - taken) / 2;
        if (name_taken(suffixed(name, middle))) {
          taken = middle;
        } else {
          free = middle;
        }
      }
    }
    std::string target = suffixed(name, free);
    if (rename_without_replacing(target)) {
      hints.remember(name, free + 1);
      return target;
    }
    start = free + 1;  // taken between the lookup and the rename
  }
  throw_errno(EEXIST, fmt::format("save as {}", name));
}

std::string PartialFile::commit(std::string_view name, const SuffixHints& hints) {
  bool durable = sync_ == SyncMode::full;
  if (durable) sync_or_throw(file_.get(), true, "fdatasync");
  std::string target(name);
  if (!rename_without_replacing(target)) target = claim_suffixed_name(name, hints);
  temp_name_.clear();
  if (durable) {
    try {
      sync_or_throw(dir_fd_, false, "fsync of the directory");
    } catch (const std::system_error&) {
      // OK would promise a name that may not survive a crash: the client is told ERR, and an
      // ERR never leaves a file behind.
      ::unlinkat(dir_fd_, target.c_str(), 0);
      throw;
    }
  }
  return target;
}

// --- OutputDirectory -----------------------------------------------------------------------------

OutputDirectory::OutputDirectory(std::string path, SyncMode sync)
    : path_(std::move(path)), sync_(sync) {
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
    if (file) return PartialFile(dir_.get(), std::move(name), std::move(file), sync_);
    // Left behind by an earlier server that was killed with this pid: pick another name.
    if (errno != EEXIST || attempt >= kMaxTempNameAttempts) {
      throw_errno(errno, "create temporary file");
    }
  }
}

// --- Committer -----------------------------------------------------------------------------------

CommitTicket& CommitTicket::operator=(CommitTicket&& other) noexcept {
  if (this != &other) {
    if (cancelled_) *cancelled_ = true;
    cancelled_ = std::move(other.cancelled_);
  }
  return *this;
}

CommitTicket::~CommitTicket() {
  if (cancelled_) *cancelled_ = true;
}

Committer::Committer(EventLoop& loop, const OutputDirectory& directory)
    : loop_(loop), directory_(directory) {
  thread_ = start_thread_without_signals([this] { work(); });
}

Committer::~Committer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_one();
  if (thread_.joinable()) thread_.join();
}

CommitTicket Committer::commit(PartialFile file, std::string name, Done done) {
  auto cancelled = std::make_shared<bool>(false);
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(Job{std::move(file), std::move(name), std::move(done), cancelled});
  }
  queued_.notify_one();
  return CommitTicket(std::move(cancelled));
}

void Committer::work() {
  while (true) {
    std::unique_lock lock(mutex_);
    queued_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and every queued file is saved
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    run_job(job);
  }
}

void Committer::run_job(Job& job) {
  auto started = std::chrono::steady_clock::now();
  CommitResult result;
  try {
    result.saved_as = job.file.commit(job.name, directory_.hints());
  } catch (const std::system_error& error) {
    result.error = error.code().message();
  }
  result.sync_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  // The shared flag is read on the loop's thread only, where tickets are destroyed too.
  loop_.post([done = std::move(job.done), cancelled = std::move(job.cancelled),
              result = std::move(result)]() mutable {
    if (!*cancelled) done(std::move(result));
  });
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
