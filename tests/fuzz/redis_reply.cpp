// A hostile Redis (issue 21: "Redis is an untrusted peer"): core's RedisLink, the real one with
// hiredis and the event loop, against a fake Redis on loopback whose every byte comes from the
// input. The input is a script of steps: bytes written on the command or the subscriber
// connection (replies, confirmations, messages, junk), turns of the loop, commands and publishes
// issued by the link's owner, and either connection closed. Checked:
//  - nothing crashes or leaks (the sanitizers), even with confirmations repeated, for another
//    channel, or of the wrong type (D6 crashed the server that way);
//  - up and down alternate, and down never comes without an up before it;
//  - a message's payload is no longer than what the fake sent on the subscriber connection;
//  - every command the link accepted hears back exactly once, with a reply or with none once
//    the link is lost: after the fake hangs up, no owner waits forever (D5 stranded joins that
//    way), and no callback runs twice.
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"
#include "core/redis/redis_link.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::redis_reply {
namespace {

constexpr const char* kChannel = "mux:room";

// One accepted connection of the link's, or an empty Fd when it never came.
Fd accept_within(int listener, std::chrono::milliseconds timeout) {
  pollfd ready{listener, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(timeout.count())) <= 0) return Fd();
  return Fd(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

// Reads and drops what the link sent (AUTH, PING, SUBSCRIBE, commands): the fake answers
// whatever the input says, not what was asked.
void drain(const Fd& peer) {
  std::array<char, 4096> scratch{};
  if (!peer) return;
  while (::recv(peer.get(), scratch.data(), scratch.size(), MSG_DONTWAIT) > 0) {
  }
}

struct Observed {
  int ups = 0;
  int downs = 0;
  bool up = false;
  std::size_t sent_to_subscriber = 0;  // bytes the fake wrote on the subscriber connection
  std::vector<int> answers;            // per accepted command: how many times it heard back
};

}  // namespace

void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  EventLoop loop;
  Fd listener = listen_tcp("127.0.0.1", 0, 8);
  std::string address = local_address(listener.get());
  auto port = static_cast<std::uint16_t>(std::stoul(address.substr(address.rfind(':') + 1)));

  RedisUrl url;
  url.host = "127.0.0.1";
  url.port = port;
  std::uint8_t setup = input.take_byte();
  if ((setup & 1) != 0) url.password = "secret";  // AUTH on both connections first
  if ((setup & 2) != 0) url.db = 3;               // SELECT on the command connection

  auto seen = std::make_shared<Observed>();
  RedisLink::Handlers handlers;
  handlers.up = [seen] {
    FUZZ_CHECK(!seen->up, "up twice without a down between");
    seen->up = true;
    ++seen->ups;
  };
  handlers.down = [seen](const std::string&) {
    FUZZ_CHECK(seen->up, "down without an up before it");
    seen->up = false;
    ++seen->downs;
  };
  handlers.message = [seen](std::string_view payload) {
    FUZZ_CHECK(seen->up, "a message while the link is not up");
    FUZZ_CHECK(payload.size() <= seen->sent_to_subscriber,
               fmt::format("a {}-byte message from {} bytes sent", payload.size(),
                           seen->sent_to_subscriber));
  };
  auto link = std::make_unique<RedisLink>(loop, url, kChannel, handlers);
  link->start();

  // The link connects its command connection first, then its subscriber; a loopback connect
  // completes in the kernel, without this thread's help.
  std::array<Fd, 2> peers{accept_within(listener.get(), std::chrono::milliseconds(2000)),
                          accept_within(listener.get(), std::chrono::milliseconds(2000))};
  FUZZ_CHECK(peers[0] && peers[1], "the link did not connect twice");

  auto issue_command = [&] {
    std::size_t index = seen->answers.size();
    bool accepted = link->command({"GET", "k"}, [seen, index](const RedisValue*) {
      FUZZ_CHECK(index < seen->answers.size(), "a callback for a command never accepted");
      ++seen->answers[index];
      FUZZ_CHECK(seen->answers[index] == 1, "a command heard back twice");
    });
    if (accepted) seen->answers.push_back(0);
  };

  while (!input.empty()) {
    std::uint8_t step = input.take_byte();
    switch (step % 6) {
      case 0:
      case 1: {  // bytes on one connection: the length, then the bytes
        Fd& peer = peers[step % 2];
        std::string_view bytes = input.take(input.take_byte() + 1u);
        if (!peer) break;
        ssize_t sent = ::send(peer.get(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent > 0 && step % 2 == 1) seen->sent_to_subscriber += static_cast<std::size_t>(sent);
        break;
      }
      case 2:
        drain(peers[0]);
        drain(peers[1]);
        loop.run_once(std::chrono::milliseconds(0));
        break;
      case 3:
        issue_command();
        break;
      case 4:
        link->publish(input.take(input.take_byte()));
        break;
      case 5:
        peers[input.take_byte() % 2] = Fd();  // the fake hangs up on that connection
        break;
    }
  }

  // The fake hangs up: every accepted command must hear back, with or without a reply.
  peers = {};
  auto waiting = [&] {
    for (int answers : seen->answers) {
      if (answers == 0) return true;
    }
    return false;
  };
  for (int turn = 0; turn < 200 && waiting(); ++turn)
    loop.run_once(std::chrono::milliseconds(5));
  FUZZ_CHECK(!waiting(), "a command never heard back after the link was lost");
  FUZZ_CHECK(seen->ups - seen->downs == (seen->up ? 1 : 0), "ups and downs do not pair");

  // Destroyed with its retry pending: nothing of it may run afterwards.
  link.reset();
  for (int turn = 0; turn < 3; ++turn)
    loop.run_once(std::chrono::milliseconds(0));
}

}  // namespace mux::fuzz::redis_reply
