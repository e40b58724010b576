#include "upload/completion_log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include <fmt/format.h>

#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

constexpr std::string_view kMagic = "mux-batch-done 1";
// A log holds a line per file of one batch; more than this is not read (a batch that large
// only sends its in-doubt files again).
constexpr std::size_t kMaxLogBytes = 64 << 20;
constexpr mode_t kLogMode = 0600;
// A lock taken on a log its holder removed just then is retried on the new name this often.
constexpr int kMaxLockAttempts = 4;

std::string header_line(std::string_view key_hash, std::string_view token_hash) {
  return fmt::format("{} key={} token={}\n", kMagic, key_hash,
                     token_hash.empty() ? std::string_view("-") : token_hash);
}

bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t written = ::write(fd, text.data(), text.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(written));
  }
  return true;
}

}  // namespace

std::string CompletionLog::file_name(std::string_view key_hash) {
  return fmt::format(".mux-resume-{}.batch.done", key_hash.substr(0, 32));
}

CompletionLog::CompletionLog(int dir_fd, std::string key_hash, std::string token_hash)
    : dir_fd_(dir_fd),
      key_hash_(std::move(key_hash)),
      token_hash_(std::move(token_hash)),
      name_(file_name(key_hash_)) {
  open_locked();
  if (file_) load();
}

CompletionLog::~CompletionLog() {
  // Created only to be locked, and nothing added: nothing to leave behind. (Still locked here,
  // so no other connection is using it.)
  struct stat info {};
  if (file_ && ::fstat(file_.get(), &info) == 0 && info.st_size == 0 && still_named(file_.get()))
    ::unlinkat(dir_fd_, name_.c_str(), 0);
}

bool CompletionLog::still_named(int fd) const {
  struct stat held {};
  struct stat named {};
  return ::fstat(fd, &held) == 0 &&
         ::fstatat(dir_fd_, name_.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
         held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

void CompletionLog::open_locked() {
  for (int attempt = 0; attempt < kMaxLockAttempts; ++attempt) {
    Fd file(::openat(dir_fd_, name_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC,
                     kLogMode));
    // Best effort, as writing it is: without a log a lost OK only means the file is sent again.
    if (!file) return;
    if (::flock(file.get(), LOCK_EX | LOCK_NB) != 0) {
      held_elsewhere_ = errno == EWOULDBLOCK;
      return;
    }
    // Its holder may have removed it (DONE, or its end) between our open and our lock: a
    // lock on a file without a name excludes no one.
    if (still_named(file.get())) {
      file_ = std::move(file);
      return;
    }
  }
  held_elsewhere_ = true;  // removed and made again under us each time: someone is busy with it
}

void CompletionLog::load() {
  struct stat info {};
  if (::fstat(file_.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
      static_cast<std::uint64_t>(info.st_size) > kMaxLogBytes) {
    return;
  }
  std::string text(static_cast<std::size_t>(info.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(file_.get(), text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  std::string header = header_line(key_hash_, token_hash_);
  if (!text.starts_with(header)) return;  // another batch's, or another token's
  std::string_view rest = std::string_view(text).substr(header.size());
  cut_short_ = !text.ends_with('\n');
  // "<size> <hash> <path> <saved>\n", path and saved name percent-encoded; a line cut short
  // by a crash has no '\n' and is not read.
  for (std::size_t newline = rest.find('\n'); newline != std::string_view::npos;
       newline = rest.find('\n')) {
    std::string_view line = rest.substr(0, newline);
    rest.remove_prefix(newline + 1);
    std::string_view parts[4];
    std::size_t count = 0;
    while (count < 4 && !line.empty()) {
      std::size_t space = line.find(' ');
      parts[count++] = line.substr(0, space);
      line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    }
    if (count != 4 || !line.empty() || parts[1].size() != 32) continue;
    std::uint64_t size = 0;
    bool number = !parts[0].empty();
    for (char c : parts[0]) {
      if (c < '0' || c > '9' || size > (UINT64_MAX - 9) / 10) {
        number = false;
        break;
      }
      size = size * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (!number) continue;
    entries_[percent_decode(parts[2])] =
        Entry{size, std::string(parts[1]), percent_decode(parts[3])};
  }
}

const CompletionLog::Entry* CompletionLog::find(const std::string& path) const {
  auto found = entries_.find(path);
  return found == entries_.end() ? nullptr : &found->second;
}

void CompletionLog::add(const std::string& path, const Entry& entry) {
  if (!file_) return;
  if (!started_) {
    started_ = true;
    // Appends to an earlier connection's log of the same batch; anything else starts anew.
    bool ours = !entries_.empty();
    if (!ours && ::ftruncate(file_.get(), 0) != 0) return;
    std::string start =
        ours ? std::string(cut_short_ ? "\n" : "") : header_line(key_hash_, token_hash_);
    if (!write_all(file_.get(), start)) {
      // Left empty, the destructor removes it; later adds write nothing.
      if (!ours) (void)::ftruncate(file_.get(), 0);
      return;
    }
  }
  (void)write_all(file_.get(), fmt::format("{} {} {} {}\n", entry.size, entry.hash,
                                           percent_encode(path), percent_encode(entry.saved_as)));
}

void CompletionLog::remove() {
  entries_.clear();
  // Removed while still locked: a connection waiting for it finds the name gone or new.
  if (file_ && still_named(file_.get())) ::unlinkat(dir_fd_, name_.c_str(), 0);
  file_.reset();
}

}  // namespace mux
