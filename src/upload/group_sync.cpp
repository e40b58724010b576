#include "upload/group_sync.hpp"

#include <unistd.h>

#include <cerrno>
#include <utility>

#include "core/loop/event_loop.hpp"
#include "upload/upload_store.hpp"

namespace mux {

GroupSync::GroupSync(EventLoop& loop, Committer& committer, int directory_fd, Hooks& hooks)
    : loop_(loop), committer_(committer), directory_fd_(directory_fd), hooks_(hooks) {}

GroupSync::~GroupSync() {
  *alive_ = nullptr;
}

void GroupSync::hold(std::string reply) {
  held_.push_back(std::move(reply));
  if (!running_) start();
}

void GroupSync::start() {
  running_ = true;
  std::size_t covered = held_.size();
  committer_.run([fd = directory_fd_, &loop = loop_, alive = alive_, covered] {
    int error = ::syncfs(fd) == 0 ? 0 : errno;
    loop.post([alive, covered, error] {
      if (GroupSync* sync = *alive) sync->synced(covered, error);
    });
  });
}

void GroupSync::synced(std::size_t covered, int error) {
  running_ = false;
  if (error != 0) {
    held_.clear();
    return hooks_.sync_failed(error);
  }
  for (; covered > 0 && !held_.empty(); --covered) {
    hooks_.synced_reply(held_.front());
    held_.pop_front();
  }
  if (!held_.empty()) {
    start();
  } else {
    hooks_.all_synced();
  }
}

}  // namespace mux
