// GroupSync: --sync full replies go out in order, each after a syncfs that began after it was
// held; a failed sync drops what it held. A real loop, Committer thread and syncfs.
#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "core/loop/event_loop.hpp"
#include "temp_dir.hpp"
#include "upload/group_sync.hpp"
#include "upload/upload_store.hpp"

namespace {

struct Recorder final : mux::GroupSync::Hooks {
  std::vector<std::string> sent;
  int all_synced_calls = 0;
  int failure = 0;
  void synced_reply(const std::string& reply) override { sent.push_back(reply); }
  void all_synced() override { ++all_synced_calls; }
  void sync_failed(int error) override { failure = error; }
};

// Runs the loop until `done` (bounded: a slow disk under load gets 20 s).
template <typename Done>
void run_until(mux::EventLoop& loop, Done done) {
  for (int round = 0; round < 2000 && !done(); ++round)
    loop.run_once(std::chrono::milliseconds{10});
}

}  // namespace

TEST_CASE("held replies go out in order once synced, the later ones after a second sync") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path);
  mux::EventLoop loop;
  mux::Committer committer(loop, dir);
  Recorder hooks;
  mux::GroupSync sync(loop, committer, dir.fd(), hooks);
  CHECK_FALSE(sync.busy());
  sync.hold("OK 1 a\n");  // a sync starts, covering this one
  sync.hold("OK 2 b\n");  // these wait for the next one
  sync.hold("OK 3 c\n");
  CHECK(sync.holding());
  CHECK(sync.busy());
  run_until(loop, [&] { return hooks.all_synced_calls != 0; });
  CHECK(hooks.sent == std::vector<std::string>{"OK 1 a\n", "OK 2 b\n", "OK 3 c\n"});
  CHECK(hooks.all_synced_calls == 1);
  CHECK(hooks.failure == 0);
  CHECK_FALSE(sync.busy());
  // Idle again: the next reply starts a sync of its own.
  sync.hold("OK 4 d\n");
  run_until(loop, [&] { return hooks.all_synced_calls == 2; });
  CHECK(hooks.sent.back() == "OK 4 d\n");
  CHECK(hooks.all_synced_calls == 2);
}

TEST_CASE("a failed sync drops every held reply and says why") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path);
  mux::EventLoop loop;
  mux::Committer committer(loop, dir);
  Recorder hooks;
  mux::GroupSync sync(loop, committer, -1, hooks);  // syncfs(-1): EBADF
  sync.hold("OK 1 a\n");
  sync.hold("OK 2 b\n");
  run_until(loop, [&] { return hooks.failure != 0; });
  CHECK(hooks.failure == EBADF);
  CHECK(hooks.sent.empty());
  CHECK(hooks.all_synced_calls == 0);
  CHECK_FALSE(sync.busy());
}

TEST_CASE("a sync that ends after its GroupSync is gone reports to nobody") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path);
  mux::EventLoop loop;
  Recorder hooks;
  {
    mux::Committer committer(loop, dir);
    {
      mux::GroupSync sync(loop, committer, dir.fd(), hooks);
      sync.hold("OK 1 a\n");
    }
  }  // the Committer finishes its work (the sync) before it goes; its report is posted
  loop.run_once(std::chrono::milliseconds{10});
  loop.run_once(std::chrono::milliseconds{10});
  CHECK(hooks.sent.empty());
  CHECK(hooks.all_synced_calls == 0);
}
