// CompletionLog: what one batch (one `batch-key=`) saved and the client has not confirmed yet
// (see kConfirmField in upload/upload_protocol.hpp): `.mux-resume-<id>.batch.done` in
// --output-dir, one line per saved file (its relative path, size, XXH3-128 and the name it was
// saved under), appended before the file's OK goes out. The client's DONE removes it; a batch
// cut off before DONE leaves it, so the same command run again is not made to save a file twice
// (as name.1) whose OK it never read. Expired with the partials (--keep-partial). Used by
// UploadSession on the loop's thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/loop/fd.hpp"

namespace mux {

class CompletionLog {
 public:
  struct Entry {
    std::uint64_t size = 0;
    std::string hash;      // XXH3-128, 32 hex digits
    std::string saved_as;  // relative to --output-dir
  };

  // The log of the batch whose key hashes to `key_hash` (SHA-256 hex), for the token hashing to
  // `token_hash` (empty: tokens off), in the directory `dir_fd`. Reads what an earlier
  // connection of the batch left (a log of another key or token is not read, and is replaced
  // by the first add()); nothing is created before add().
  CompletionLog(int dir_fd, std::string key_hash, std::string token_hash);

  [[nodiscard]] const std::string& key_hash() const noexcept { return key_hash_; }
  [[nodiscard]] const std::string& token_hash() const noexcept { return token_hash_; }
  // What an earlier connection saved at `path`; nullptr when nothing.
  [[nodiscard]] const Entry* find(const std::string& path) const;
  // Best effort (a full disk: the client that lost this OK only sends the file again).
  void add(const std::string& path, const Entry& entry);
  // The client confirmed every reply: the log is of no further use.
  void remove();

  // ".mux-resume-<id>.batch.done".
  static std::string file_name(std::string_view key_hash);

 private:
  void load();

  int dir_fd_;
  std::string key_hash_;
  std::string token_hash_;
  std::string name_;
  Fd file_;  // open for appending once the first entry of this connection is written
  std::unordered_map<std::string, Entry> entries_;  // an earlier connection's
  bool cut_short_ = false;  // the earlier log ends inside a line (a crash while writing it)
};

}  // namespace mux
