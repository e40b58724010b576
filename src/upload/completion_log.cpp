#include "upload/completion_log.hpp"

#include <fcntl.h>
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
  load();
}

void CompletionLog::load() {
  Fd file(::openat(dir_fd_, name_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!file) return;
  struct stat info {};
  if (::fstat(file.get(), &info) != 0 || !S_ISREG(info.st_mode) ||
      static_cast<std::uint64_t>(info.st_size) > kMaxLogBytes) {
    return;
  }
  std::string text(static_cast<std::size_t>(info.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(file.get(), text.data() + got, text.size() - got, static_cast<off_t>(got));
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
  if (!file_) {
    // Appends to an earlier connection's log of the same batch; anything else starts anew.
    bool ours = !entries_.empty();
    file_ = Fd(::openat(
        dir_fd_, name_.c_str(),
        O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC | (ours ? 0 : O_TRUNC), kLogMode));
    if (!file_) return;
    std::string start =
        ours ? std::string(cut_short_ ? "\n" : "") : header_line(key_hash_, token_hash_);
    if (!write_all(file_.get(), start)) {
      file_.reset();
      ::unlinkat(dir_fd_, name_.c_str(), 0);
      return;
    }
  }
  (void)write_all(file_.get(), fmt::format("{} {} {} {}\n", entry.size, entry.hash,
                                           percent_encode(path), percent_encode(entry.saved_as)));
}

void CompletionLog::remove() {
  file_.reset();
  entries_.clear();
  ::unlinkat(dir_fd_, name_.c_str(), 0);
}

}  // namespace mux
