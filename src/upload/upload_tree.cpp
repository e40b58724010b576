#include "upload/upload_tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

[[noreturn]] void throw_path_error(const std::string& path, int error) {
  throw std::runtime_error(fmt::format("{}: {}", path, std::generic_category().message(error)));
}

std::int64_t modified_ns(const struct stat& info) {
  return static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
}

// The name a root is stored under: its last component; "." and ".." (and "dir/") by what they
// name.
std::string root_name(const std::string& root) {
  std::string trimmed = root;
  while (trimmed.size() > 1 && trimmed.back() == '/')
    trimmed.pop_back();
  std::string base =
      trimmed.substr(trimmed.rfind('/') == std::string::npos ? 0 : trimmed.rfind('/') + 1);
  if (base == "." || base == ".." || base.empty()) {
    std::unique_ptr<char, decltype(&std::free)> real(::realpath(root.c_str(), nullptr), std::free);
    if (!real) throw_path_error(root, errno);
    std::string resolved = real.get();
    base = resolved.substr(resolved.rfind('/') + 1);
  }
  if (base.empty()) throw std::runtime_error(fmt::format("{}: name a directory below /", root));
  return base;
}

void check_sendable(const std::string& source, const std::string& path) {
  if (std::string why = check_relative_path(path); !why.empty()) {
    throw std::runtime_error(
        fmt::format("{}: this name cannot be sent (the server refuses it: {})", source, why));
  }
}

void walk_directory(const std::string& source, const std::string& path, UploadTree& tree) {
  Fd dir_fd(::open(source.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir_fd) throw_path_error(source, errno);
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(dir_fd.get()), ::closedir);
  if (!dir) throw_path_error(source, errno);
  int fd = dir_fd.release();
  std::vector<std::string> names;
  errno = 0;
  while (dirent* entry = ::readdir(dir.get())) {
    std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::string child_source = fmt::format("{}/{}", source, name);
    std::string child_path = fmt::format("{}/{}", path, name);
    struct stat info {};
    if (::fstatat(fd, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) {
      throw_path_error(child_source, errno);
    }
    if (S_ISLNK(info.st_mode)) {
      tree.warnings.push_back(
          fmt::format("{}: a symbolic link, not followed: skipped", child_source));
      continue;
    }
    if (!S_ISDIR(info.st_mode) && !S_ISREG(info.st_mode)) {
      tree.warnings.push_back(
          fmt::format("{}: not a regular file or directory: skipped", child_source));
      continue;
    }
    check_sendable(child_source, child_path);
    if (S_ISDIR(info.st_mode)) {
      tree.entries.push_back(TreeEntry{child_source, child_path, true, 0, modified_ns(info)});
      walk_directory(child_source, child_path, tree);
    } else {
      auto size = static_cast<std::uint64_t>(info.st_size);
      tree.entries.push_back(TreeEntry{child_source, child_path, false, size, modified_ns(info)});
      ++tree.files;
      tree.bytes += size;
    }
  }
}

std::string journal_key(const TreeEntry& entry) {
  return fmt::format("{} {} {}", entry.size, entry.modified_ns, percent_encode(entry.path));
}

}  // namespace

UploadTree walk_upload_tree(const std::vector<std::string>& roots) {
  UploadTree tree;
  for (const std::string& root : roots) {
    struct stat info {};
    // A root is taken as named, a link to a file or a directory included.
    if (::stat(root.c_str(), &info) != 0) throw_path_error(root, errno);
    std::string name = root_name(root);
    check_sendable(root, name);
    if (S_ISDIR(info.st_mode)) {
      tree.entries.push_back(TreeEntry{root, name, true, 0, modified_ns(info)});
      walk_directory(root, name, tree);
    } else if (S_ISREG(info.st_mode)) {
      auto size = static_cast<std::uint64_t>(info.st_size);
      tree.entries.push_back(TreeEntry{root, name, false, size, modified_ns(info)});
      ++tree.files;
      tree.bytes += size;
    } else {
      throw std::runtime_error(
          fmt::format("{}: not a regular file or directory (with other files, --file names "
                      "files and directories)",
                      root));
    }
  }
  return tree;
}

BatchJournal::BatchJournal(std::string path, bool load) : path_(std::move(path)) {
  if (path_.empty()) return;
  if (load) {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() < 3 || line[1] != ' ') continue;
      (line[0] == 'D' ? confirmed_ : started_).insert(line.substr(2));
    }
  }
  file_.reset(::open(path_.c_str(),
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (load ? 0 : O_TRUNC), 0600));
}

bool BatchJournal::confirmed(const TreeEntry& entry) const {
  return confirmed_.count(journal_key(entry)) != 0;
}

bool BatchJournal::started(const TreeEntry& entry) const {
  return started_.count(journal_key(entry)) != 0;
}

void BatchJournal::append(char kind, const TreeEntry& entry) {
  if (!file_) return;
  // One write per line, O_APPEND: a line is whole or absent after a kill; no flush (losing the
  // last lines to a crash of the machine only sends those files again).
  std::string line = fmt::format("{} {}\n", kind, journal_key(entry));
  (void)!::write(file_.get(), line.data(), line.size());
}

// Kept in memory too: a --retry of the same run (a new BatchSender) skips what this run's
// earlier tries had confirmed, also without a journal file (no upload key).
void BatchJournal::mark_started(const TreeEntry& entry) {
  started_.insert(journal_key(entry));
  append('S', entry);
}

void BatchJournal::mark_confirmed(const TreeEntry& entry) {
  confirmed_.insert(journal_key(entry));
  append('D', entry);
}

void BatchJournal::remove() {
  if (path_.empty()) return;
  file_.reset();
  ::unlink(path_.c_str());
}

}  // namespace mux
