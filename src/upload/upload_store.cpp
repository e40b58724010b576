#include "upload/upload_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
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
#include <vector>

#include <fmt/format.h>

#include "core/base/threads.hpp"
#include "core/loop/event_loop.hpp"

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
// Resumable partials: ".mux-resume-<id>.part" and ".mux-resume-<id>.rec", <id> from the key hash.
constexpr std::string_view kResumePrefix = ".mux-resume-";
constexpr std::string_view kRecordSuffix = ".rec";
constexpr std::string_view kCompletionSuffix = ".done";

// ".mux-resume-<id>.rec" -> ".mux-resume-<id>.done"
std::string completion_name(std::string_view record_name) {
  record_name.remove_suffix(kRecordSuffix.size());
  return fmt::format("{}{}", record_name, kCompletionSuffix);
}
constexpr std::size_t kResumeIdLength = 32;
// A record is about 1.3 KiB; anything longer is not one.
constexpr std::size_t kMaxRecordBytes = 8192;
constexpr int kOpenResumeFlags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC;

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
      keep_(other.keep_),
      record_name_(std::move(other.record_name_)),
      completion_(std::move(other.completion_)),
      can_reserve_(other.can_reserve_),
      written_(other.written_),
      writeback_started_(other.writeback_started_) {}

PartialFile::~PartialFile() {
  if (temp_name_.empty() || keep_) return;
  ::unlinkat(dir_fd_, temp_name_.c_str(), 0);
  if (!record_name_.empty()) ::unlinkat(dir_fd_, record_name_.c_str(), 0);
}

void PartialFile::keep_for_resume(std::string record_name, std::uint64_t offset) noexcept {
  keep_ = true;
  record_name_ = std::move(record_name);
  written_ = offset;
  writeback_started_ = offset - offset % kWritebackWindow;
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

int PartialFile::restart() {
  if (::ftruncate(file_.get(), 0) != 0 || ::lseek(file_.get(), 0, SEEK_SET) < 0) return errno;
  written_ = 0;
  writeback_started_ = 0;
  return 0;
}

bool PartialFile::rename_without_replacing(int target_dir, const std::string& target) {
  // Neither call follows a symlink at `target`: an existing entry of any kind, a dangling symlink
  // included, is EEXIST.
  if (::renameat2(dir_fd_, temp_name_.c_str(), target_dir, target.c_str(), RENAME_NOREPLACE) == 0) {
    return true;
  }
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) throw_errno(errno, fmt::format("rename to {}", target));
  // A filesystem without RENAME_NOREPLACE: link(2) refuses an existing target just as atomically.
  if (::linkat(dir_fd_, temp_name_.c_str(), target_dir, target.c_str(), 0) < 0) {
    if (errno == EEXIST) return false;
    throw_errno(errno, fmt::format("link to {}", target));
  }
  ::unlinkat(dir_fd_, temp_name_.c_str(), 0);
  return true;
}

bool PartialFile::name_taken(int target_dir, const std::string& target) const {
  struct stat info {};
  if (::fstatat(target_dir, target.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno(errno, fmt::format("look up {}", target));
}

std::string PartialFile::claim_suffixed_name(int target_dir, std::string_view name,
                                             std::string_view hint_key, const SuffixHints& hints) {
  // Trying name.1, name.2, ... one rename at a time made the n-th copy of a name cost n renames.
  // Instead start where the last copy of this name ended (the hint), and when that is wrong,
  // look ahead 1, 2, 4, 8... suffixes for a free one and bisect back to the first free one after
  // a taken one: O(1) renames with a good hint, O(log n) lookups without one.
  std::uint64_t start = std::max<std::uint64_t>(hints.next_for(hint_key), 1);
  for (int round = 0; round < kMaxClaimRounds; ++round) {
    std::uint64_t free = start;
    if (name_taken(target_dir, suffixed(name, start))) {
      std::uint64_t taken = start;
      std::uint64_t step = 1;
      free = start + step;
      while (name_taken(target_dir, suffixed(name, free))) {
        taken = free;
        if (step > std::numeric_limits<std::uint64_t>::max() / 4) throw_errno(EEXIST, "save");
        step *= 2;
        free = start + step;
      }
      while (free - taken > 1) {
        std::uint64_t middle = taken + (free - taken) / 2;
        if (name_taken(target_dir, suffixed(name, middle))) {
          taken = middle;
        } else {
          free = middle;
        }
      }
    }
    std::string target = suffixed(name, free);
    if (rename_without_replacing(target_dir, target)) {
      hints.remember(hint_key, free + 1);
      return target;
    }
    start = free + 1;  // taken between the lookup and the rename
  }
  throw_errno(EEXIST, fmt::format("save as {}", name));
}

std::string PartialFile::commit(std::string_view name, const SuffixHints& hints) {
  return commit_in(dir_fd_, name, name, hints, sync_ == SyncMode::full);
}

std::string PartialFile::commit_in(int target_dir, std::string_view name, std::string_view hint_key,
                                   const SuffixHints& hints, bool durable) {
  if (durable) sync_or_throw(file_.get(), true, "fdatasync");
  std::string target(name);
  if (!rename_without_replacing(target_dir, target)) {
    target = claim_suffixed_name(target_dir, name, hint_key, hints);
  }
  temp_name_.clear();
  if (durable) {
    try {
      sync_or_throw(target_dir, false, "fsync of the directory");
    } catch (const std::system_error&) {
      // OK would promise a name that may not survive a crash: the client is told ERR, and an
      // ERR never leaves a file behind.
      ::unlinkat(target_dir, target.c_str(), 0);
      throw;
    }
  }
  // After the name is durable: a crash in between leaves a record without data, which the next
  // start removes.
  if (!record_name_.empty()) {
    if (completion_) write_completion(hint_key, target);
    ::unlinkat(dir_fd_, record_name_.c_str(), 0);
  }
  return target;
}

// Best effort: without it (a full disk, a crash before it is written back) a client that lost
// the OK only sends the file again, as before completion records.
void PartialFile::write_completion(std::string_view hint_key, const std::string& leaf) {
  std::size_t slash = hint_key.rfind('/');
  completion_->saved_as = slash == std::string_view::npos
                              ? leaf
                              : fmt::format("{}/{}", hint_key.substr(0, slash), leaf);
  std::string done_name = completion_name(record_name_);
  std::string encoded = encode_resume_record(*completion_);
  Fd done(::openat(dir_fd_, done_name.c_str(),
                   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, kFileMode));
  if (!done) return;
  ssize_t written;
  do {
    written = ::write(done.get(), encoded.data(), encoded.size());
  } while (written < 0 && errno == EINTR);
  if (written != static_cast<ssize_t>(encoded.size())) ::unlinkat(dir_fd_, done_name.c_str(), 0);
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

Fd OutputDirectory::open_subdir(std::string_view relative, bool create) const {
  // One component at a time, each opened without following a symlink: a link planted inside
  // the directory can never lead a batch's files out of it.
  Fd current(::fcntl(dir_.get(), F_DUPFD_CLOEXEC, 0));
  if (!current) throw_errno(errno, "open --output-dir");
  while (!relative.empty()) {
    std::size_t slash = relative.find('/');
    std::string part(relative.substr(0, slash));
    relative.remove_prefix(slash == std::string_view::npos ? relative.size() : slash + 1);
    if (create && ::mkdirat(current.get(), part.c_str(), 0777) != 0 && errno != EEXIST) {
      throw_errno(errno, fmt::format("create directory {}", part));
    }
    Fd next(::openat(current.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next)
      throw_errno(errno == ELOOP ? ENOTDIR : errno, fmt::format("open directory {}", part));
    current = std::move(next);
  }
  return current;
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

void Committer::run(std::function<void()> work) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(Job{std::nullopt, {}, {}, {}, std::move(work)});
  }
  queued_.notify_one();
}

CommitTicket Committer::commit(PartialFile file, std::string name, Done done) {
  auto cancelled = std::make_shared<bool>(false);
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(Job{std::move(file), std::move(name), std::move(done), cancelled, {}});
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
  if (!job.file) {
    job.work();
    return;
  }
  auto started = std::chrono::steady_clock::now();
  CommitResult result;
  try {
    result.saved_as = job.file->commit(job.name, directory_.hints());
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

namespace mux {
namespace {

std::optional<std::string> read_small_file(int fd) {
  std::string text(kMaxRecordBytes, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  return text;
}

// `name` in `dir` is the file open as `fd` (not removed or replaced since it was opened).
bool same_file(int dir, const std::string& name, int fd) {
  struct stat held {};
  struct stat named {};
  return ::fstat(fd, &held) == 0 &&
         ::fstatat(dir, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
         held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

bool older_than(const struct stat& info, std::chrono::seconds age) {
  auto modified = std::chrono::system_clock::from_time_t(info.st_mtim.tv_sec);
  return std::chrono::system_clock::now() - modified > age;
}

// The record of `wanted`'s key, when it can be continued: intact, the same size, name, key and
// token, not expired, a hash state this build can read, data at least as long as the record says.
std::optional<std::pair<std::uint64_t, ContentHash>> continue_from_record(
    int data_fd, int record_fd, const ResumeRecord& wanted, std::chrono::seconds keep) {
  struct stat record_info {};
  struct stat data_info {};
  if (::fstat(record_fd, &record_info) != 0 || ::fstat(data_fd, &data_info) != 0) return {};
  if (older_than(record_info, keep)) return {};
  std::optional<std::string> text = read_small_file(record_fd);
  if (!text) return {};
  std::optional<ResumeRecord> record = decode_resume_record(*text);
  if (!record || record->key_hash != wanted.key_hash || record->token_hash != wanted.token_hash ||
      record->size != wanted.size || record->name != wanted.name ||
      record->offset > static_cast<std::uint64_t>(data_info.st_size)) {
    return {};
  }
  std::optional<ContentHash> hash = ContentHash::restore(record->hash_state);
  if (!hash) return {};
  return std::pair<std::uint64_t, ContentHash>(record->offset, std::move(*hash));
}

}  // namespace

int write_resume_checkpoint(int data_fd, int record_fd, const std::string& encoded, SyncMode sync,
                            std::optional<std::uint64_t> cut_at) {
  auto retry = [](auto call) {
    int rc;
    do {
      rc = call();
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? errno : 0;
  };
  if (cut_at) {
    if (int error = retry([&] { return ::ftruncate(data_fd, static_cast<off_t>(*cut_at)); });
        error != 0)
      return error;
  }
  if (sync == SyncMode::full) {
    if (int error = retry([&] { return ::fdatasync(data_fd); }); error != 0) return error;
  }
  // One write of about 1.3 KiB at offset 0: whole or not at all when the process dies; a
  // torn one after a power cut fails the record's checksum and the upload starts over.
  ssize_t written;
  do {
    written = ::pwrite(record_fd, encoded.data(), encoded.size(), 0);
  } while (written < 0 && errno == EINTR);
  if (written < 0) return errno;
  if (static_cast<std::size_t>(written) != encoded.size()) return EIO;
  if (sync == SyncMode::full) return retry([&] { return ::fdatasync(record_fd); });
  return 0;
}

std::optional<ResumeClaim> OutputDirectory::claim_resumable(const ResumeRecord& wanted) const {
  std::string id = wanted.key_hash.substr(0, kResumeIdLength);
  std::string data_name = fmt::format("{}{}{}", kResumePrefix, id, kPartialSuffix);
  std::string record_name = fmt::format("{}{}{}", kResumePrefix, id, kRecordSuffix);
  // Made here, or an earlier connection's: only a file made here may be removed when busy.
  bool made = false;
  Fd data(::openat(dir_.get(), data_name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!data && errno == ENOENT) {
    data.reset(::openat(dir_.get(), data_name.c_str(), kOpenResumeFlags | O_EXCL, kFileMode));
    made = static_cast<bool>(data);
    if (!data && errno == EEXIST) return std::nullopt;  // another connection made it just now
  }
  if (!data) throw_errno(errno, "open the partial upload");
  // Per open file: a second connection with the same key, in this process or another, waits.
  if (::flock(data.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::nullopt;
    throw_errno(errno, "lock the partial upload");
  }
  Fd record(::openat(dir_.get(), record_name.c_str(), kOpenResumeFlags, kFileMode));
  if (!record) throw_errno(errno, "open the partial upload's record");
  // The record is locked by the connection that holds the data until that connection ends,
  // after its commit: a commit that renamed the data away (so the data just made here is new)
  // is still writing the completion record. And a record removed between the open and the lock
  // (that commit just ended) is no record. Either way the next try finds the completion record.
  bool locked = ::flock(record.get(), LOCK_EX | LOCK_NB) == 0;
  if (!locked && errno != EWOULDBLOCK) throw_errno(errno, "lock the partial upload's record");
  if (!locked || !same_file(dir_.get(), record_name, record.get())) {
    if (made && same_file(dir_.get(), data_name, data.get()))
      ::unlinkat(dir_.get(), data_name.c_str(), 0);
    return std::nullopt;
  }
  auto found = continue_from_record(data.get(), record.get(), wanted, keep_partial_);
  std::uint64_t offset = found ? found->first : 0;
  ContentHash hash = found ? std::move(found->second) : ContentHash();
  // Starting over: the old record must never describe the new data.
  if (!found && ::ftruncate(record.get(), 0) != 0) {
    throw_errno(errno, "reset the partial upload's record");
  }
  // What came after the checkpoint is not covered by the saved hash state: cut it off.
  if (::ftruncate(data.get(), static_cast<off_t>(offset)) != 0) {
    throw_errno(errno, "truncate the partial upload");
  }
  if (::lseek(data.get(), static_cast<off_t>(offset), SEEK_SET) < 0) {
    throw_errno(errno, "seek in the partial upload");
  }
  PartialFile file(dir_.get(), std::move(data_name), std::move(data), sync_);
  file.keep_for_resume(std::move(record_name), offset);
  return ResumeClaim{std::move(file), std::move(record), offset, std::move(hash)};
}

std::optional<ResumeRecord> OutputDirectory::find_completed(const ResumeRecord& wanted) const {
  std::string id = wanted.key_hash.substr(0, kResumeIdLength);
  std::string done_name = fmt::format("{}{}{}", kResumePrefix, id, kCompletionSuffix);
  Fd done(::openat(dir_.get(), done_name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!done) return std::nullopt;
  struct stat info {};
  if (::fstat(done.get(), &info) != 0 || older_than(info, keep_partial_)) return std::nullopt;
  std::optional<std::string> text = read_small_file(done.get());
  if (!text) return std::nullopt;
  std::optional<ResumeRecord> record = decode_resume_record(*text);
  if (!record || record->saved_as.empty() || record->key_hash != wanted.key_hash ||
      record->token_hash != wanted.token_hash || record->size != wanted.size ||
      record->name != wanted.name || record->offset != record->size) {
    return std::nullopt;
  }
  return record;
}

void OutputDirectory::forget_completed(std::string_view key_hash) const {
  std::string done_name =
      fmt::format("{}{}{}", kResumePrefix, key_hash.substr(0, kResumeIdLength), kCompletionSuffix);
  ::unlinkat(dir_.get(), done_name.c_str(), 0);
}

std::size_t OutputDirectory::remove_expired_resumables() const {
  Fd listing(::openat(dir_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!listing) return 0;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(listing.get()), ::closedir);
  if (!dir) return 0;
  (void)listing.release();
  std::vector<std::string> records;
  std::size_t removed = 0;
  while (dirent* entry = ::readdir(dir.get())) {
    std::string_view name = entry->d_name;
    if (!name.starts_with(kResumePrefix)) continue;
    if (name.ends_with(kRecordSuffix)) {
      records.emplace_back(name);
      continue;
    }
    if (name.ends_with(kCompletionSuffix)) {  // its age is all that counts
      struct stat info {};
      // A batch's log is locked while a connection of the batch adds to it.
      Fd done(::openat(dir_.get(), entry->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (done && ::flock(done.get(), LOCK_EX | LOCK_NB) == 0 && ::fstat(done.get(), &info) == 0 &&
          older_than(info, keep_partial_)) {
        ::unlinkat(dir_.get(), entry->d_name, 0);  // not a partial: not counted
      }
      continue;
    }
    if (!name.ends_with(kPartialSuffix)) continue;
    Fd data(::openat(dir_.get(), entry->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (!data || ::flock(data.get(), LOCK_EX | LOCK_NB) != 0) continue;  // in use
    std::string record_name(name.substr(0, name.size() - kPartialSuffix.size()));
    record_name += kRecordSuffix;
    struct stat info {};
    // The record's time is the last checkpoint's; a partial without one, its own.
    if (::fstatat(dir_.get(), record_name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0 &&
        ::fstat(data.get(), &info) != 0) {
      continue;
    }
    if (!older_than(info, keep_partial_)) continue;
    ::unlinkat(dir_.get(), record_name.c_str(), 0);
    if (::unlinkat(dir_.get(), entry->d_name, 0) == 0) ++removed;
  }
  // A record whose data is gone (committed just before a crash, or expired above).
  for (const std::string& record_name : records) {
    std::string data_name = record_name.substr(0, record_name.size() - kRecordSuffix.size());
    data_name += kPartialSuffix;
    struct stat info {};
    if (::fstatat(dir_.get(), data_name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0 &&
        errno == ENOENT) {
      // Not while a connection holds it: a commit renamed the data and is still writing the
      // completion record (see claim_resumable).
      Fd record(::openat(dir_.get(), record_name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
      if (record && ::flock(record.get(), LOCK_EX | LOCK_NB) == 0)
        ::unlinkat(dir_.get(), record_name.c_str(), 0);
    }
  }
  return removed;
}

}  // namespace mux
