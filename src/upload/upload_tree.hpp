// UploadTree: what upload-client sends when --file names a directory or is given more than once
// (a batch, see MUXUP/1's batch=1): every directory (so empty ones are kept) and regular file
// under the roots, in a stable order (each directory before what it holds, names sorted), with
// the relative path the server stores it under: a root's own name, then the path inside it, as
// `scp -r` and `rsync` without a trailing slash do. Symbolic links are never followed below a
// root (one that points out of the tree could otherwise send any file of the machine) and,
// like sockets, FIFOs and devices, are skipped with a warning; a root named on the command line
// is taken as it is, link or not. A name the server would refuse (check_relative_path) fails
// the walk before anything is sent.
//
// BatchJournal: what lets the same command continue a batch: next to the upload key, the files
// the server confirmed (skipped on the next run while their size and time are the same) and the
// large files started (which the next run asks the server about: RESUME).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/loop/fd.hpp"

namespace mux {

struct TreeEntry {
  std::string source;  // the local path, opened when the file is sent
  std::string path;    // relative, '/'-separated: the name the server stores
  bool directory = false;
  std::uint64_t size = 0;
  std::int64_t modified_ns = 0;  // st_mtim: a changed file is not taken for a confirmed one
};

struct UploadTree {
  std::vector<TreeEntry> entries;
  std::uint64_t files = 0;            // regular files among the entries
  std::uint64_t bytes = 0;            // their sizes together
  std::vector<std::string> warnings;  // "tree/link: a symbolic link, not followed: skipped"
};

// Throws std::runtime_error "<path>: <reason>" (missing, unreadable, a name that cannot be sent).
UploadTree walk_upload_tree(const std::vector<std::string>& roots);

class BatchJournal {
 public:
  // `path` empty: nothing is kept (no upload key). `load`: read what an earlier run wrote.
  BatchJournal(std::string path, bool load);

  [[nodiscard]] bool confirmed(const TreeEntry& entry) const;
  [[nodiscard]] bool started(const TreeEntry& entry) const;
  void mark_started(const TreeEntry& entry);
  void mark_confirmed(const TreeEntry& entry);
  // The whole batch is confirmed: the next run of the command is a new upload.
  void remove();

 private:
  void append(char kind, const TreeEntry& entry);

  std::string path_;
  Fd file_;
  std::unordered_set<std::string> confirmed_;
  std::unordered_set<std::string> started_;
};

}  // namespace mux
