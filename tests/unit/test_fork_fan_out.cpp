// ForkFanOut: the fork-mode parent's per-batch coalescing of deliveries to child links. A link
// slot freed and taken again within one batch must not inherit the old link's deliveries.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "chat/fork_relay.hpp"
#include "core/base/logger.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/output_queue.hpp"

namespace {

// ChildLink only signals its process when the child is stuck, which never happens here; this
// pid cannot exist (above any pid_max), so even then nothing would be hit.
constexpr pid_t kNoSuchProcess = std::numeric_limits<pid_t>::max();

struct NoOwner final : mux::MemberOwner {
  void release(mux::ChatMember& /*member*/) override {}
};

struct LinkEnds {
  mux::Fd parent;
  mux::Fd child;
};

LinkEnds make_link() {
  int ends[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) == 0);
  return {mux::Fd(ends[0]), mux::Fd(ends[1])};
}

// Everything the child end can read now (the flush has already written it).
std::string read_available(const mux::Fd& end) {
  std::string got;
  char buffer[4096];
  while (true) {
    ssize_t n = ::read(end.get(), buffer, sizeof buffer);
    if (n <= 0) return got;
    got.append(buffer, static_cast<std::size_t>(n));
  }
}

struct FanOutFixture {
  mux::EventLoop loop;
  mux::Logger logger{mux::Verbosity::quiet};
  mux::ChatRoom room{logger, 4096};
  mux::SessionContext context{loop, 4096, 1 << 20};
  mux::ForkFanOut fan_out{loop};
  NoOwner owner;

  std::unique_ptr<mux::ChildLink> attach(mux::Fd parent_end) {
    return std::make_unique<mux::ChildLink>(context, fan_out, std::move(parent_end), kNoSuchProcess,
                                            mux::AdmissionTicket{}, room, owner);
  }
  void end_batch() { loop.run_once(std::chrono::milliseconds(0)); }
};

}  // namespace

TEST_CASE_FIXTURE(FanOutFixture, "fork fan-out: a slot reused within one batch starts clean") {
  LinkEnds a = make_link();
  LinkEnds b = make_link();
  LinkEnds c = make_link();
  auto link_a = attach(std::move(a.parent));
  auto link_b = attach(std::move(b.parent));

  // One batch: a broadcast, b leaves, c arrives and takes b's slot, another broadcast.
  mux::Block before = mux::make_block("before c joined\n");
  link_a->deliver(before);
  link_b->deliver(before);
  link_b.reset();
  auto link_c = attach(std::move(c.parent));
  mux::Block after = mux::make_block("after c joined\n");
  link_a->deliver(after);
  link_c->deliver(after);
  CHECK(fan_out.pending());
  end_batch();

  CHECK_FALSE(fan_out.pending());
  CHECK(read_available(a.child) == "before c joined\nafter c joined\n");
  CHECK(read_available(c.child) == "after c joined\n");  // not b's line
  CHECK(read_available(b.child).empty());                // b's end: closed, nothing written
}

TEST_CASE_FIXTURE(FanOutFixture, "fork fan-out: each link gets its blocks once and in order") {
  LinkEnds a = make_link();
  LinkEnds b = make_link();
  auto link_a = attach(std::move(a.parent));
  auto link_b = attach(std::move(b.parent));
  mux::Block first = mux::make_block("1\n");
  mux::Block second = mux::make_block("2\n");
  mux::Block only_a = mux::make_block("a\n");
  link_a->deliver(first);
  link_b->deliver(first);
  link_a->deliver(only_a);
  link_a->deliver(first);  // the same block again for one link: a new group, kept in order
  link_b->deliver(second);
  link_a->deliver(second);
  end_batch();
  CHECK(read_available(a.child) == "1\na\n1\n2\n");
  CHECK(read_available(b.child) == "1\n2\n");
}
