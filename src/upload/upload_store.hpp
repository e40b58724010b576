// Where uploads are saved with --output-dir.
//
// OutputDirectory owns the directory fd (opened once at start, so a rename of DIR cannot redirect
// uploads), the --sync mode and the table of name hints; the upload server makes one before it
// serves (and before any fork) and every UploadSession asks it for a PartialFile.
//
// A PartialFile is a hidden temporary file that becomes visible under its final name only through
// a commit, which never overwrites and never follows a symlink; destroyed without a commit it
// removes itself, so an incomplete upload leaves nothing behind. With --sync full it starts the
// write-back of its data while the upload is still arriving, so the flush before OK is short.
//
// A Committer (one per event loop: the single-loop server's, or a fork-mode child's) commits
// PartialFiles on a helper thread, because fdatasync/fsync may block for as long as the disk
// takes, and hands the result back to the loop with EventLoop::post(): a slow flush never stops
// the loop from serving other uploads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <sys/types.h>

#include <functional>

#include "core/loop/fd.hpp"
#include "upload/content_hash.hpp"
#include "upload/resume_record.hpp"

namespace mux {

class EventLoop;

// What OK promises (man page, --sync):
//   full  the data, the file's size and its name are on stable storage: they survive a crash of
//         the machine or a power cut (as far as the disk honours flushes);
//   none  the data and the name are in the kernel: they survive mux being killed, not a crash of
//         the machine (the kernel writes them back within about 30 s).
enum class SyncMode { full, none };

[[nodiscard]] const char* to_string(SyncMode mode) noexcept;

// The next ".N" suffix to try per saved name, shared by every process of one server: an anonymous
// MAP_SHARED mapping made before the first fork, so fork-mode children learn from each other.
// Only a hint: every name is still claimed with RENAME_NOREPLACE, so a stale entry, two names
// sharing a slot or a race between processes costs an extra try, never an overwrite.
class SuffixHints {
 public:
  SuffixHints();
  SuffixHints(const SuffixHints&) = delete;
  SuffixHints& operator=(const SuffixHints&) = delete;
  ~SuffixHints();

  // 0 when nothing is known about `name`.
  [[nodiscard]] std::uint64_t next_for(std::string_view name) const noexcept;
  void remember(std::string_view name, std::uint64_t next) const noexcept;

 private:
  struct Slot {
    std::atomic<std::uint64_t> name_hash;
    std::atomic<std::uint64_t> next;
  };
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared between processes");

  [[nodiscard]] Slot& slot_for(std::uint64_t hash) const noexcept;

  Slot* slots_ = nullptr;  // kSlots of them, in the shared mapping
};

class PartialFile {
 public:
  PartialFile(int dir_fd, std::string temp_name, Fd file, SyncMode sync) noexcept;
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
  // Empties the file and writes from its start again (a resumable upload that starts over).
  [[nodiscard]] int restart();

  // A resumable upload's data (see ResumeClaim): never removed on destruction, so the uploader
  // can continue it; the commit removes `record_name` (its ResumeRecord) once the file has its
  // name. The next append goes after `offset` bytes of existing data.
  void keep_for_resume(std::string record_name, std::uint64_t offset) noexcept;
  // A resumable upload the server refused (disk full, too large...): removed on destruction
  // after all, with its record, like any failed upload.
  void discard_on_close() noexcept { keep_ = false; }
  // A resumable upload whose data is all here: once the commit named the file, `record` (with
  // the saved name filled in) replaces its ResumeRecord as the completion record (see
  // OutputDirectory::find_completed), so a client that never read the OK is not made to send
  // it again.
  void set_completion(ResumeRecord record) { completion_ = std::move(record); }
  [[nodiscard]] SyncMode sync_mode() const noexcept { return sync_; }

  // Makes the data durable (--sync full: fdatasync), gives the file its name — `name`, else
  // `name.N` for the first N found free — without ever replacing an existing entry, even one
  // created by a concurrent upload or another process, then makes the name durable (fsync of the
  // directory). Blocks for as long as the disk takes: the Committer calls it on its thread.
  // Returns the name used. Throws std::system_error; the temporary file is then still removed
  // on destruction.
  std::string commit(std::string_view name, const SuffixHints& hints);
  // The same into the directory `target_dir` (a batch's subdirectory, see
  // OutputDirectory::open_subdir); `hint_key` names the file for the SuffixHints (its relative
  // path). Without `durable` neither the data nor the name is flushed: a batch with --sync full
  // flushes many files at once afterwards (syncfs).
  std::string commit_in(int target_dir, std::string_view name, std::string_view hint_key,
                        const SuffixHints& hints, bool durable);

 private:
  void start_writeback();
  void write_completion(std::string_view hint_key, const std::string& leaf);
  bool rename_without_replacing(int target_dir, const std::string& target);
  [[nodiscard]] bool name_taken(int target_dir, const std::string& target) const;
  std::string claim_suffixed_name(int target_dir, std::string_view name, std::string_view hint_key,
                                  const SuffixHints& hints);

  int dir_fd_;
  std::string temp_name_;  // empty once committed or moved from
  Fd file_;
  SyncMode sync_;
  bool keep_ = false;                       // resumable: left in place when not committed
  std::string record_name_;                 // resumable: removed by the commit
  std::optional<ResumeRecord> completion_;  // resumable and whole: written by the commit
  bool can_reserve_ = true;
  std::uint64_t written_ = 0;
  std::uint64_t writeback_started_ = 0;  // bytes already handed to sync_file_range
};

struct ResumeClaim;

class OutputDirectory {
 public:
  // Opens DIR and proves it writable by creating and removing a probe file. Throws
  // std::system_error naming the flag and the directory ("--output-dir /x: Permission denied").
  explicit OutputDirectory(std::string path, SyncMode sync = SyncMode::full);

  [[nodiscard]] int fd() const noexcept { return dir_.get(); }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] SyncMode sync_mode() const noexcept { return sync_; }
  [[nodiscard]] const SuffixHints& hints() const noexcept { return hints_; }
  // How a file in the directory is named in logs: "DIR/name", with one slash.
  [[nodiscard]] std::string path_of(std::string_view name) const;
  // A new hidden temporary file (".mux-upload-<pid>-<client>.part"), created O_EXCL|O_NOFOLLOW.
  // The pid in the name says which process owns it, so files left by a process that died can be
  // found and removed. Throws std::system_error.
  PartialFile create_partial(std::uint64_t client_number) const;
  // The subdirectory `relative` (a checked relative path: check_relative_path()), each component
  // opened with O_NOFOLLOW and, with `create`, made first when missing. Throws
  // std::system_error (a component that is a file or a symlink: "Not a directory").
  Fd open_subdir(std::string_view relative, bool create) const;
  // Removes the temporary files of process `pid` (a fork-mode child that died without cleaning
  // up). Returns how many were removed.
  std::size_t remove_partials_of(pid_t pid) const;
  // At start-up: removes temporary files whose owner no longer runs (or is this very process,
  // which has created none yet). Returns how many were removed.
  std::size_t remove_stale_partials() const;
  // --keep-partial: how long a resumable partial upload waits for its uploader.
  void set_keep_partial(std::chrono::seconds keep) noexcept { keep_partial_ = keep; }
  [[nodiscard]] std::chrono::seconds keep_partial() const noexcept { return keep_partial_; }
  // Claims the partial upload of upload key hash `wanted.key_hash` (".mux-resume-<id>.part" and
  // its record ".mux-resume-<id>.rec"), creating it when there is none. The data and the record
  // are locked (flock) while the claim's descriptors live: nullopt when another connection holds
  // either (the holder keeps the record locked through its commit, which renames the data away
  // before it writes the completion record, so a new try never starts an empty partial beside a
  // commit in progress). The claim continues
  // the record's checkpoint only when the record is intact, not expired and matches `wanted`
  // (size, name, key and token hashes); otherwise it starts at 0, replacing what was there (the
  // same key means the same uploader). Never reads the data: cuts it back to the checkpoint.
  // Throws std::system_error.
  std::optional<ResumeClaim> claim_resumable(const ResumeRecord& wanted) const;
  // The completion record of `wanted`'s key (".mux-resume-<id>.done", written when its upload
  // was saved), when it matches `wanted` (size, name, key and token hashes) and is younger than
  // --keep-partial: what was saved under which name, and the hash state of all of it. One
  // small file per completed resumable upload, removed with the partials when it expires.
  [[nodiscard]] std::optional<ResumeRecord> find_completed(const ResumeRecord& wanted) const;
  // The client confirmed the OK (DONE): the completion record of `key_hash` is removed.
  void forget_completed(std::string_view key_hash) const;
  // Removes resumable partials (and records, and completion records) older than --keep-partial
  // that nobody holds.
  std::size_t remove_expired_resumables() const;

  // Bytes available to an unprivileged user on the directory's filesystem (statvfs f_bavail).
  [[nodiscard]] std::uint64_t free_bytes() const;

 private:
  // Removes every temporary file whose owner pid `is_dead` says yes to.
  std::size_t remove_partials_if(const std::function<bool(pid_t)>& is_dead) const;

  std::string path_;
  SyncMode sync_;
  Fd dir_;
  SuffixHints hints_;
  std::chrono::seconds keep_partial_{86'400};
};

// A resumable upload's partial data, held by one connection.
struct ResumeClaim {
  PartialFile file;      // locked; kept when not committed
  Fd record;             // the ResumeRecord file, rewritten at each checkpoint; locked
  std::uint64_t offset;  // data kept from an earlier connection (0: starts over)
  ContentHash hash;      // of the first `offset` bytes
};

// Writes `encoded` (a ResumeRecord) as the checkpoint of `data`. With --sync full the data is
// flushed first and the record after it, so a record never claims data a crash could lose;
// blocking, so the session runs it on the Committer's thread. Returns 0 or the errno.
// With `cut_at`, the data is first cut to that length (an interrupted upload's last checkpoint:
// what was reserved past the data goes back to the disk).
int write_resume_checkpoint(int data_fd, int record_fd, const std::string& encoded, SyncMode sync,
                            std::optional<std::uint64_t> cut_at = std::nullopt);

// The outcome of one commit, as the loop sees it.
struct CommitResult {
  std::string saved_as;     // the name used; empty on failure
  std::string error;        // why the commit failed ("No space left on device"); empty on success
  double sync_seconds = 0;  // time spent making it durable and naming it, on the helper thread
};

// Cancels a commit's callback when destroyed (the session is gone): the file is still saved.
class CommitTicket {
 public:
  CommitTicket() = default;
  explicit CommitTicket(std::shared_ptr<bool> cancelled) : cancelled_(std::move(cancelled)) {}
  CommitTicket(CommitTicket&&) noexcept = default;
  CommitTicket& operator=(CommitTicket&& other) noexcept;
  CommitTicket(const CommitTicket&) = delete;
  CommitTicket& operator=(const CommitTicket&) = delete;
  ~CommitTicket();

 private:
  std::shared_ptr<bool> cancelled_;  // touched on the loop's thread only
};

class Committer {
 public:
  using Done = std::function<void(CommitResult)>;

  Committer(EventLoop& loop, const OutputDirectory& directory);
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;
  // Finishes every commit already queued (those files are saved), then stops the thread.
  ~Committer();

  // Commits `file` as `name` on the helper thread, in the order asked; `done` then runs on the
  // loop's thread, unless the ticket was destroyed first.
  [[nodiscard]] CommitTicket commit(PartialFile file, std::string name, Done done);
  // Runs `work` on the helper thread, in order with the commits (a --sync full checkpoint).
  void run(std::function<void()> work);

 private:
  struct Job {
    std::optional<PartialFile> file;  // none: a plain `work` job
    std::string name;
    Done done;
    std::shared_ptr<bool> cancelled;
    std::function<void()> work;
  };

  void work();
  void run_job(Job& job);

  EventLoop& loop_;
  const OutputDirectory& directory_;
  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<Job> jobs_;   // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;     // last: started once everything it uses exists
};

}  // namespace mux
