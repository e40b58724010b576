#include "chat/chat_server.hpp"

#include <sys/socket.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "chat/fork_relay.hpp"
#include "chat/local_member.hpp"
#include "core/child_process.hpp"
#include "core/event_loop.hpp"
#include "core/logger.hpp"
#include "core/net.hpp"
#include "core/units.hpp"

namespace mux {
namespace {

// fds kept back from --max-clients' default: the listener, epoll, signalfd, the log, the
// acceptor's reserve, and clients still closing.
constexpr std::uint64_t kReservedFds = 64;
// Accepting is bounded per wake-up so a connection storm cannot starve clients already here.
constexpr int kAcceptsPerWakeup = 256;
// How long a shutdown waits for every client to be told and closed.
constexpr std::chrono::milliseconds kShutdownTimeout{3000};

const char* signal_name(int signo) {
  return signo == SIGINT ? "SIGINT" : "SIGTERM";
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return fmt::format("exit status {}", WEXITSTATUS(status));
}

// The whole server: listener, room, members and the shutdown. One per run_chat_server().
class ChatServer final : public MemberOwner {
 public:
  ChatServer(const ChatServerOptions& options, Logger& logger)
      : options_(options),
        logger_(logger),
        context_(loop_, options.max_line, options.max_queue),
        acceptor_(listen_tcp(options.common.host, options.common.port)),
        room_(logger, options.max_line),
        max_clients_(options.max_clients != 0 ? options.max_clients : default_max_clients()) {}

  int run() {
    logger_.info("listening on {} (serve {})", local_address(acceptor_.fd()),
                 to_string(options_.serve));
    logger_.info("limits: {} clients, lines up to {} bytes, {} queued per client", max_clients_,
                 options_.max_line, format_bytes(options_.max_queue));
    loop_.watch(acceptor_.fd(), EPOLLIN, [this](std::uint32_t) { accept_clients(); });
    loop_.on_signal(SIGINT, [this] { shut_down(SIGINT); });
    loop_.on_signal(SIGTERM, [this] { shut_down(SIGTERM); });
    if (options_.serve == ServeMode::fork) loop_.on_signal(SIGCHLD, [this] { reap(); });
    loop_.run();
    members_.clear();
    if (options_.serve == ServeMode::fork) wait_for_children();
    logger_.info("stopped");
    return 0;
  }

  void release(ChatMember& member) override {
    auto it = members_.find(&member);
    if (it == members_.end()) return;
    loop_.retire(std::move(it->second));
    members_.erase(it);
    if (stopping_ && members_.empty()) loop_.stop();
  }

 private:
  static std::uint64_t default_max_clients() {
    std::uint64_t limit = fd_limit();  // run_chat_server raised it already
    return limit > 2 * kReservedFds ? limit - kReservedFds : limit / 2;
  }

  void accept_clients() {
    for (int i = 0; i < kAcceptsPerWakeup && !stopping_; ++i) {
      bool dropped = false;
      std::optional<Acceptor::Accepted> client = acceptor_.accept(dropped);
      if (dropped) logger_.info("refused a connection: out of file descriptors");
      if (!client) return;
      set_nodelay(client->fd.get());
      if (room_.size() >= max_clients_) {
        refuse(std::move(client->fd), client->peer,
               fmt::format("server full ({} clients)", room_.size()));
      } else if (options_.serve == ServeMode::fork) {
        admit_forked(std::move(*client));
      } else {
        admit_local(std::move(*client));
      }
    }
  }

  void admit_local(Acceptor::Accepted client) {
    auto member = std::make_unique<LocalMember>(context_, std::move(client.fd), room_, *this);
    ChatMember& joined = *member;
    members_.emplace(&joined, std::move(member));
    room_.join(joined, client.peer);
  }

  void admit_forked(Acceptor::Accepted client) {
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, ends) < 0) {
      return refuse(std::move(client.fd), client.peer,
                    fmt::format("socketpair: {}", std::strerror(errno)));
    }
    Fd parent_end(ends[0]);
    Fd child_end(ends[1]);
    pid_t pid = 0;
    try {
      pid = fork_child({client.fd.get(), child_end.get()}, &logger_, [&] {
        return serve_client_in_child(std::move(client.fd), std::move(child_end), options_.max_line,
                                     options_.max_queue);
      });
    } catch (const std::system_error& error) {
      return refuse(std::move(client.fd), client.peer, error.what());
    }
    children_.insert(pid);
    auto member =
        std::make_unique<ChildLink>(context_, fan_out_, std::move(parent_end), pid, room_, *this);
    ChatMember& joined = *member;
    members_.emplace(&joined, std::move(member));
    room_.join(joined, fmt::format("{} (pid {})", client.peer, pid));
  }

  // The newcomer is told why and closed; it never joins the room.
  void refuse(Fd socket, const std::string& peer, const std::string& why) {
    logger_.info("refused {}: {}", peer, why);
    auto member = std::make_unique<LocalMember>(context_, std::move(socket), room_, *this);
    member->deliver(make_block(chat::notice::server_full()));
    member->close_after_output();
    ChatMember* key = member.get();
    members_.emplace(key, std::move(member));
  }

  void shut_down(int signo) {
    if (stopping_) {
      logger_.info("{} again: stopping now", signal_name(signo));
      loop_.stop();
      return;
    }
    stopping_ = true;
    logger_.info("shutting down ({}): closing {} clients", signal_name(signo), room_.size());
    loop_.unwatch(acceptor_.fd());
    acceptor_.close();
    room_.close_all();
    if (members_.empty()) loop_.stop();
    loop_.add_timer(kShutdownTimeout, [this] {
      if (!members_.empty()) logger_.info("{} clients did not close in time", members_.size());
      loop_.stop();
    });
  }

  void reap() {
    reap_children([this](pid_t pid, int status) {
      children_.erase(pid);
      if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
        logger_.info("client process {} ended: {}", pid, describe_exit(status));
      }
    });
  }

  // Children whose clients have closed exit on their own within moments; any still running
  // after that is stuck and is killed, so none is ever left behind or unreaped.
  void wait_for_children() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!children_.empty() && std::chrono::steady_clock::now() < deadline) {
      reap();
      if (!children_.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (pid_t pid : children_)
      ::kill(pid, SIGKILL);
    for (pid_t pid : children_) {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    children_.clear();
  }

  const ChatServerOptions& options_;
  Logger& logger_;
  EventLoop loop_;
  SessionContext context_;
  // Fork mode: coalesces each batch's deliveries to the children (outlives the members).
  ForkFanOut fan_out_{loop_};
  Acceptor acceptor_;
  ChatRoom room_;
  // Declared after the loop and the room: members unwatch their fds and leave on destruction.
  std::unordered_map<ChatMember*, std::unique_ptr<ChatMember>> members_;
  std::unordered_set<pid_t> children_;
  std::uint64_t max_clients_;
  bool stopping_ = false;
};

}  // namespace

void setup_chat_server(CLI::App& app, ChatServerOptions& options) {
  CLI::App* sub = app.add_subcommand(
      "chat-server", "Group chat: every line a client sends goes to every other client");
  add_common_flags(*sub, options.common);
  add_serve_flag(*sub, options.serve);
  add_count_flag(*sub, "--max-clients", options.max_clients,
                 "Most clients connected at once (default: what the fd limit allows)", 1,
                 10'000'000);
  add_size_flag(*sub, "--max-line", options.max_line, "Longest line relayed; longer lines are cut",
                1)
      ->capture_default_str();
  add_size_flag(*sub, "--max-queue", options.max_queue,
                "Output queued for one slow client before it is disconnected", 1024)
      ->capture_default_str();
}

int run_chat_server(const ChatServerOptions& options) {
  ignore_sigpipe();
  raise_fd_limit();
  Logger logger(options.common.verbosity());
  ChatServer server(options, logger);
  return server.run();
}

}  // namespace mux
