// GroupSync: a --sync full batch's OK replies, held until one syncfs covers the files they name
// (group commit): the data, the names and the directories of every file saved since the last
// sync began reach the disk in one journal commit, on the Committer's thread, while the loop goes
// on receiving the next files. Replies are handed back in order, each only once its file is
// durable; a failed sync drops every held reply (none of them may be told OK).
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace mux {

class Committer;
class EventLoop;

class GroupSync {
 public:
  // What the session does with the outcome; called on the loop's thread.
  class Hooks {
   public:
    // A reply whose file is durable now: send it.
    virtual void synced_reply(const std::string& reply) = 0;
    // Every reply held so far went out.
    virtual void all_synced() = 0;
    // syncfs failed with `error` (errno); the held replies are dropped.
    virtual void sync_failed(int error) = 0;

   protected:
    ~Hooks() = default;
  };

  // `directory_fd`: the output directory, whose filesystem is synced.
  GroupSync(EventLoop& loop, Committer& committer, int directory_fd, Hooks& hooks);
  GroupSync(const GroupSync&) = delete;
  GroupSync& operator=(const GroupSync&) = delete;
  // A sync still running reports to nobody.
  ~GroupSync();

  // Holds `reply` until a sync that began after it ends; starts one unless one runs.
  void hold(std::string reply);
  // Replies are waiting (for a sync running or about to).
  [[nodiscard]] bool holding() const noexcept { return !held_.empty(); }
  // Replies are waiting, or a sync runs.
  [[nodiscard]] bool busy() const noexcept { return holding() || running_; }

 private:
  void start();
  void synced(std::size_t covered, int error);

  EventLoop& loop_;
  Committer& committer_;
  int directory_fd_;
  Hooks& hooks_;
  std::deque<std::string> held_;
  bool running_ = false;
  // What a sync's result, posted from the Committer's thread, finds: null once this is gone.
  std::shared_ptr<GroupSync*> alive_ = std::make_shared<GroupSync*>(this);
};

}  // namespace mux
