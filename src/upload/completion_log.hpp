// CompletionLog: what one batch (one `batch-key=`) saved and the client has not confirmed yet
// (see kConfirmField in upload/upload_protocol.hpp): `.mux-resume-<id>.batch.done` in
// --output-dir, one line per saved file (its relative path, size, XXH3-128 and the name it was
// saved under), appended before the file's OK goes out. The client's DONE removes it; a batch
// cut off before DONE leaves it, so the same command run again is not made to save a file twice
// (as name.1) whose OK it never read. Expired with the partials (--keep-partial). Used by
// UploadSession on the loop's thread.
//
// The log is locked (flock) for as long as the connection that opened it lives: a second
// connection of the same batch (the command run again while a fork-mode child, or the single
// loop, still saves the first one's buffered files) finds it held and is answered ERR busy,
// instead of reading a log the first one is still adding to and saving those files again.
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
  // by the first add()). The file is created (empty) to be locked, and removed again when this
  // connection ends without adding to it.
  CompletionLog(int dir_fd, std::string key_hash, std::string token_hash);
  CompletionLog(const CompletionLog&) = delete;
  CompletionLog& operator=(const CompletionLog&) = delete;
  ~CompletionLog();

  // Another connection holds this batch's log: it may still save files of the batch, so this
  // one must not start (ERR busy; the client tries again shortly).
  [[nodiscard]] bool held_elsewhere() const noexcept { return held_elsewhere_; }

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
  void open_locked();
  void load();
  // The locked file is still the one the name points to (its holder may have removed it).
  [[nodiscard]] bool still_named(int fd) const;

  int dir_fd_;
  std::string key_hash_;
  std::string token_hash_;
  std::string name_;
  Fd file_;               // open (appending) and locked from the constructor on; none: no log
  bool started_ = false;  // this connection wrote its first line (the header, or a '\n')
  bool held_elsewhere_ = false;
  std::unordered_map<std::string, Entry> entries_;  // an earlier connection's
  bool cut_short_ = false;  // the earlier log ends inside a line (a crash while writing it)
};

}  // namespace mux
