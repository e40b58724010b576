// Where uploads are saved with --output-dir. OutputDirectory owns the directory fd (opened once at
// start, so a rename of DIR cannot redirect uploads) and creates PartialFiles in it; the upload
// server owns one and every UploadSession asks it for a file. A PartialFile is a hidden temporary
// file that becomes visible under its final name only through commit(), which never overwrites;
// destroyed without a commit it removes itself, so an incomplete upload leaves nothing behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <sys/types.h>

#include <functional>

#include "core/fd.hpp"

namespace mux {

class PartialFile {
 public:
  PartialFile(int dir_fd, std::string temp_name, Fd file) noexcept;
  PartialFile(PartialFile&& other) noexcept;
  PartialFile& operator=(PartialFile&&) = delete;
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;
  ~PartialFile();

  [[nodiscard]] int fd() const noexcept { return file_.get(); }
  // Appends all of `data`. Returns 0, or the errno of the failed write (ENOSPC, EDQUOT, EFBIG...).
  [[nodiscard]] int append(const char* data, std::size_t length);
  // Allocates disk space up to byte `end` ahead of the writes (fallocate). Returns 0, or the errno
  // (ENOSPC, EDQUOT, EFBIG...). A filesystem without fallocate is not an error: the writes then
  // allocate as they go.
  [[nodiscard]] int reserve(std::uint64_t end);
  // Cuts the file to `length` bytes, giving back space reserved past it. Returns 0 or the errno.
  [[nodiscard]] int truncate(std::uint64_t length);
  // Gives the file its name: `name`, else `name.1`, `name.2`, ... whichever is free first, without
  // ever replacing an existing entry, even one created by a concurrent upload. Returns the name
  // used. Throws std::system_error; the temporary file is then still removed on destruction.
  std::string commit(std::string_view name);

 private:
  bool link_without_replacing(const std::string& target);

  int dir_fd_;
  std::string temp_name_;  // empty once committed or moved from
  Fd file_;
  bool can_reserve_ = true;
};

class OutputDirectory {
 public:
  // Opens DIR and proves it writable by creating and removing a probe file. Throws
  // std::system_error naming the flag and the directory ("--output-dir /x: Permission denied").
  explicit OutputDirectory(std::string path);

  [[nodiscard]] int fd() const noexcept { return dir_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  // How a file in the directory is named in logs: "DIR/name", with one slash.
  [[nodiscard]] std::string path_of(std::string_view name) const;
  // A new hidden temporary file (".mux-upload-<pid>-<client>.part"), created O_EXCL|O_NOFOLLOW.
  // The pid in the name says which process owns it, so files left by a process that died can be
  // found and removed. Throws std::system_error.
  PartialFile create_partial(std::uint64_t client_number) const;
  // Removes the temporary files of process `pid` (a fork-mode child that died without cleaning
  // up). Returns how many were removed.
  std::size_t remove_partials_of(pid_t pid) const;
  // At start-up: removes temporary files whose owner no longer runs (or is this very process,
  // which has created none yet). Returns how many were removed.
  std::size_t remove_stale_partials() const;
  // Bytes available to an unprivileged user on the directory's filesystem (statvfs f_bavail).
  [[nodiscard]] std::uint64_t free_bytes() const;

 private:
  // Removes every temporary file whose owner pid `is_dead` says yes to.
  std::size_t remove_partials_if(const std::function<bool(pid_t)>& is_dead) const;

  std::string path_;
  Fd dir_;
};

}  // namespace mux
