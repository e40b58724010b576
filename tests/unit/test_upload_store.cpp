// The upload store without sockets: naming (never overwrite, never follow a symlink, the next
// free suffix found without trying every one), both --sync modes, and the Committer handing its
// results back to the loop through EventLoop::post().
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/loop/event_loop.hpp"
#include "temp_dir.hpp"
#include "upload/upload_store.hpp"

namespace {

using StoreDir = mux::testing::TempDir;

std::string save(const mux::OutputDirectory& dir, const std::string& name,
                 const std::string& text) {
  mux::PartialFile file = dir.create_partial(1);
  REQUIRE(file.append(text.data(), text.size()) == 0);
  return file.commit(name, dir.hints());
}

}  // namespace

TEST_CASE("copies of one name are saved as name, name.1, name.2, ... and never overwrite") {
  StoreDir temp;
  for (auto mode : {mux::SyncMode::full, mux::SyncMode::none}) {
    CAPTURE(mux::to_string(mode));
    mux::OutputDirectory dir(temp.path, mode);
    std::string base = std::string("f-") + mux::to_string(mode);
    CHECK(save(dir, base, "0") == base);
    CHECK(save(dir, base, "1") == base + ".1");
    CHECK(save(dir, base, "2") == base + ".2");
    CHECK(temp.read(base) == "0");
    CHECK(temp.read(base + ".2") == "2");
  }
}

TEST_CASE("a name taken behind the server's back is skipped, without trying every suffix") {
  StoreDir temp;
  mux::OutputDirectory dir(temp.path);
  temp.write("report", "theirs");
  for (int n = 1; n <= 40; ++n)
    temp.write("report." + std::to_string(n), "theirs");
  CHECK(save(dir, "report", "ours") == "report.41");
  // The hint remembers where the last copy went; someone else then takes the next one too.
  temp.write("report.42", "theirs");
  CHECK(save(dir, "report", "ours again") == "report.43");
  CHECK(temp.read("report.42") == "theirs");
  CHECK(temp.read("report.43") == "ours again");
}

TEST_CASE("a symlink at the name is neither followed nor replaced") {
  StoreDir temp;
  StoreDir elsewhere;
  elsewhere.write("target", "precious");
  REQUIRE(::symlink((elsewhere.path + "/target").c_str(), (temp.path + "/link").c_str()) == 0);
  REQUIRE(::symlink("/nonexistent/dangling", (temp.path + "/link.1").c_str()) == 0);
  mux::OutputDirectory dir(temp.path);
  CHECK(save(dir, "link", "upload") == "link.2");
  CHECK(elsewhere.read("target") == "precious");
  struct stat info {};
  REQUIRE(::lstat((temp.path + "/link").c_str(), &info) == 0);
  CHECK(S_ISLNK(info.st_mode));
}

TEST_CASE("a file that is not committed leaves nothing behind") {
  StoreDir temp;
  mux::OutputDirectory dir(temp.path);
  {
    mux::PartialFile file = dir.create_partial(7);
    std::string big(20 << 20, 'x');  // crosses the write-back windows
    REQUIRE(file.append(big.data(), big.size()) == 0);
    CHECK(temp.entries().size() == 1);
  }
  CHECK(temp.entries().empty());
}

TEST_CASE("EventLoop::post runs a callback from another thread on the loop's thread") {
  mux::EventLoop loop;
  std::thread::id ran_on;
  std::thread helper([&] { loop.post([&] { ran_on = std::this_thread::get_id(); }); });
  helper.join();
  for (int round = 0; round < 100 && ran_on == std::thread::id(); ++round)
    loop.run_once(std::chrono::milliseconds{10});
  CHECK(ran_on == std::this_thread::get_id());
}

TEST_CASE(
    "the Committer saves on its thread and reports on the loop; a dropped ticket only "
    "silences the report") {
  StoreDir temp;
  mux::OutputDirectory dir(temp.path);
  mux::EventLoop loop;
  std::vector<mux::CommitResult> results;
  {
    mux::Committer committer(loop, dir);
    mux::PartialFile first = dir.create_partial(1);
    REQUIRE(first.append("one", 3) == 0);
    mux::CommitTicket kept = committer.commit(
        std::move(first), "a.txt", [&](mux::CommitResult r) { results.push_back(std::move(r)); });
    mux::PartialFile second = dir.create_partial(2);
    REQUIRE(second.append("two", 3) == 0);
    {
      mux::CommitTicket dropped = committer.commit(
          std::move(second), "a.txt", [&](mux::CommitResult r) { results.push_back(r); });
    }
    for (int round = 0; round < 200 && results.empty(); ++round)
      loop.run_once(std::chrono::milliseconds{10});
  }  // the Committer finishes every queued file before it goes
  loop.run_once(std::chrono::milliseconds{10});
  REQUIRE(results.size() == 1);
  CHECK(results[0].saved_as == "a.txt");
  CHECK(results[0].error.empty());
  CHECK(temp.entries() == std::set<std::string>{"a.txt", "a.txt.1"});
  CHECK(temp.read("a.txt.1") == "two");
}
