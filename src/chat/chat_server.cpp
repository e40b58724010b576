#include "chat/chat_server.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <fmt/ranges.h>

#include "chat/chat_access.hpp"
#include "chat/chat_protocol.hpp"
#include "chat/chat_room.hpp"
#include "chat/client_session.hpp"
#include "chat/redis_room_bus.hpp"
#include "chat/serve_strategy.hpp"
#include "core/access/message_mac.hpp"
#include "core/access/secret_file.hpp"
#include "core/base/logger.hpp"
#include "core/base/units.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/listener.hpp"
#include "core/loop/net.hpp"
#include "core/service/child_supervisor.hpp"
#include "core/service/server_runtime.hpp"

namespace mux {
namespace {

// fds kept back from --max-clients' default: the listener, epoll, signalfd, the log, the
// acceptor's reserve, and clients still closing.
constexpr std::uint64_t kReservedFds = 64;
// How long a shutdown waits for every client to be told and closed.
constexpr std::chrono::milliseconds kShutdownTimeout{3000};
// After that, fork-mode children still running get this long to exit before SIGKILL.
constexpr std::chrono::milliseconds kChildExitGrace{1000};

void check_redis_tls_flags(const ChatServerOptions& options) {
  if (std::string problem = redis_flags_problem(options); !problem.empty())
    throw std::invalid_argument(problem);
}

// What a refused newcomer reads before the server closes its connection.
std::string refusal_line(Refusal refusal) {
  switch (refusal) {
    case Refusal::server_full:
      return chat::notice::server_full();
    case Refusal::too_many_from_address:
      return "* server full: too many connections from your address\n";
    case Refusal::not_allowed:
      return "* not allowed\n";
  }
  return chat::notice::server_full();
}

// The --redis URL with its password from --redis-password-file, else MUX_REDIS_PASSWORD, else
// the URL itself. Throws std::invalid_argument or SecretFileError.
RedisUrl redis_url_of(const ChatServerOptions& options) {
  RedisUrl url = parse_redis_url(options.redis_url);
  if (!options.redis_password_file.empty()) {
    std::string text = read_secret_file("--redis-password-file", options.redis_password_file, 4096);
    std::string_view first = text;
    first = first.substr(0, first.find('\n'));
    if (!first.empty() && first.back() == '\r') first.remove_suffix(1);
    if (first.empty())
      throw SecretFileError(fmt::format("--redis-password-file {}: its first line is empty",
                                        options.redis_password_file));
    url.password = first;
  } else if (const char* from_environment = std::getenv("MUX_REDIS_PASSWORD");
             from_environment != nullptr && *from_environment != '\0') {
    url.password = from_environment;
  }
  return url;
}

// --room-secret-file's MAC, or none. Throws SecretFileError (never naming the secret).
std::optional<MessageMac> room_mac_of(const ChatServerOptions& options) {
  if (options.room_secret_file.empty()) return std::nullopt;
  return MessageMac::from_file("--room-secret-file", options.room_secret_file);
}

// A password in the --redis URL is in the process list for every local user to read.
std::optional<std::string> redis_password_exposure(const ChatServerOptions& options) {
  if (options.redis_url.empty() || !options.redis_password_file.empty()) return std::nullopt;
  const char* from_environment = std::getenv("MUX_REDIS_PASSWORD");
  if (from_environment != nullptr && *from_environment != '\0') return std::nullopt;
  if (parse_redis_url(options.redis_url).password.empty()) return std::nullopt;
  return "the Redis password in --redis is in the process list for every local user to read: "
         "use --redis-password-file FILE (mode 600) or MUX_REDIS_PASSWORD";
}

// The chat server's own part (the room, its members, both serve modes) on the ServerRuntime
// skeleton. One per run_chat_server().
class ChatServer final : public MemberOwner, public ServerRuntime::Service {
 public:
  ChatServer(const ChatServerOptions& options, ServerRuntime& runtime)
      : options_(options),
        runtime_(runtime),
        logger_(runtime.logger()),
        loop_(runtime.loop()),
        context_(loop_, options.max_line, options.max_queue),
        room_(logger_, options.max_line, client_limits(options)),
        bus_(make_bus()),
        max_clients_(options.max_clients != 0 ? options.max_clients : default_max_clients()),
        strategy_(make_strategy()),
        // Last: every start-up error above comes before the port is taken and announced.
        listener_(loop_, runtime.take_listener(), logger_, admission_policy(),
                  [this](Admitted client) { admit(std::move(client)); }) {
    context_.stream_factory = runtime_.stream_factory();
    room_.set_history(static_cast<std::size_t>(options.history));
    room_.set_announce_limit(static_cast<std::size_t>(options.announce_up_to));
    if (bus_) room_.set_bus(bus_.get());
    access_.logger = &logger_;
    access_.auth_timeout = options.auth_timeout;
    // The gate's deadline covers the handshake too; the connection's own one must not be shorter.
    context_.handshake_timeout = std::max(context_.handshake_timeout, options.auth_timeout);
    if (runtime_.tokens().required()) {
      access_.tokens = &runtime_.tokens();
      access_.throttle = runtime_.throttle();
    }
  }

  void start() override {
    if (auto exposed = redis_password_exposure(options_)) logger_.warn("{}", *exposed);
    logger_.info(
        "limits: {} clients, lines up to {} bytes, {} queued per client, {} per address, "
        "keepalive {}",
        max_clients_, options_.max_line, format_bytes(options_.max_queue),
        options_.max_per_address == 0 ? std::string("no limit")
                                      : std::to_string(options_.max_per_address),
        keepalive_seconds() == 0 ? std::string("off") : fmt::format("{} s", keepalive_seconds()));
    logger_.info(
        "per client: {} lines/s (burst {}), {}/s (burst {}), {} commands/s (burst {}), "
        "flood timeout {:g} s",
        options_.line_rate, options_.line_burst, format_bytes(options_.byte_rate),
        format_bytes(options_.byte_burst), options_.command_rate, options_.command_burst,
        static_cast<double>(options_.flood_timeout.count()) / 1000);
    warn_about_fd_ceiling();
    runtime_.describe_access("clients send /token SECRET first");
    if (options_.history != 0)
      logger_.info("history: the last {} messages {}", options_.history,
                   bus_ ? "in Redis, shared by the room" : "in memory, until this server stops");
    if (bus_) bus_->start();
    listener_.resume();
  }

  void finish() override {
    members_.clear();
    strategy_->finish(kChildExitGrace);
  }

  void release(ChatMember& member) override {
    auto it = members_.find(&member);
    if (it == members_.end()) return;
    loop_.retire(std::move(it->second));
    members_.erase(it);
    stop_when_done();
  }

 private:
  // Lines from the other servers get each sender the same limits as a local client.
  static chat::RemoteLimits remote_limits(const ChatServerOptions& options) {
    ClientLimits limits = client_limits(options);
    return {limits.line_rate, limits.line_burst, limits.byte_rate, limits.byte_burst};
  }

  static ClientLimits client_limits(const ChatServerOptions& options) {
    ClientLimits limits;
    limits.line_rate = static_cast<double>(options.line_rate);
    limits.line_burst = static_cast<double>(options.line_burst);
    limits.byte_rate = static_cast<double>(options.byte_rate);
    limits.byte_burst = static_cast<double>(options.byte_burst);
    limits.command_rate = static_cast<double>(options.command_rate);
    limits.command_burst = static_cast<double>(options.command_burst);
    limits.flood_timeout = options.flood_timeout;
    return limits;
  }

  // TCP keepalive counts in whole seconds; a nonzero --keepalive under one second is one.
  std::int64_t keepalive_seconds() const {
    auto ms = options_.keepalive.count();
    return ms == 0 ? 0 : std::max<std::int64_t>((ms + 999) / 1000, 1);
  }

  // Every client costs this process one fd (its socket, or in fork mode the parent's end of the
  // child's socketpair): a --max-clients above what the fd limit allows cannot be reached, and
  // the hard limit is the system's to raise, not ours.
  void warn_about_fd_ceiling() {
    std::uint64_t limit = fd_limit();
    std::uint64_t reachable = limit > 2 * kReservedFds ? limit - kReservedFds : limit / 2;
    if (options_.max_clients == 0 || options_.max_clients <= reachable) return;
    logger_.warn(
        "--max-clients {} is above what this process's fd limit ({}) allows: about {} clients; "
        "raise the hard limit (LimitNOFILE=, limits.conf) or run several servers sharing a "
        "--redis room",
        options_.max_clients, limit, reachable);
  }

  std::uint64_t default_max_clients() const {
    std::uint64_t limit = fd_limit();  // the ServerRuntime raised it already
    std::uint64_t by_fds = limit > 2 * kReservedFds ? limit - kReservedFds : limit / 2;
    // In fork mode every client is a process: the machine's memory and pid limits bound them too.
    if (options_.serve == ServeMode::fork)
      return std::min<std::uint64_t>(
          by_fds, ChildSupervisor::default_max_children(ChildSupervisor::kDefaultBytesPerChild));
    return by_fds;
  }

  // With --redis: the room shared through Redis. In fork mode too the parent holds the room, so
  // it alone talks to Redis.
  std::unique_ptr<RedisRoomBus> make_bus() {
    check_redis_tls_flags(options_);
    if (options_.redis_url.empty()) return nullptr;
    return std::make_unique<RedisRoomBus>(
        loop_, logger_, room_, redis_url_of(options_), options_.redis_tls, options_.room,
        static_cast<std::size_t>(options_.history), static_cast<std::size_t>(options_.max_line),
        remote_limits(options_), room_mac_of(options_));
  }

  std::unique_ptr<ServeStrategy> make_strategy() {
    ServeParts parts{
        context_, room_, *this, access_, logger_, [this](std::unique_ptr<ChatMember> member) {
          ChatMember* key = member.get();
          members_.emplace(key, std::move(member));
        }};
    if (options_.serve != ServeMode::fork) return std::make_unique<SingleServe>(std::move(parts));
    // A child whose client has left exits within moments; until it is reaped its process still
    // counts here (newcomers past this wait in the backlog), but its client slot is free.
    return std::make_unique<ForkServe>(
        std::move(parts),
        static_cast<std::size_t>(max_clients_ + std::max<std::uint64_t>(16, max_clients_ / 8)),
        [this] { listener_.resume(); });
  }

  AdmissionPolicy admission_policy() {
    AdmissionPolicy policy;
    policy.max_connections = static_cast<std::size_t>(max_clients_);
    policy.max_per_address = static_cast<std::size_t>(options_.max_per_address);
    // A chat client at the cap is told so at once (`* server full`) rather than left hanging.
    policy.refuse_when_full = true;
    policy.refusal_message = refusal_line;
    policy.allowed = runtime_.address_check();
    policy.refusal_stream = runtime_.stream_factory();  // TLS: the refusal goes out inside TLS
    policy.has_room = [this] { return !stopping_ && strategy_->has_room(); };
    if (runtime_.tls() != nullptr || runtime_.tokens().required()) {
      // Clients still in the handshake or before their token get a budget of their own; at the
      // cap the oldest of them is shed for a newcomer (see AdmissionPolicy).
      policy.max_unauthenticated =
          static_cast<std::size_t>(std::max<std::uint64_t>(64, max_clients_ / 8));
      policy.max_unauthenticated_per_address = static_cast<std::size_t>(
          options_.max_per_address == 0 ? 0
                                        : std::max<std::uint64_t>(8, options_.max_per_address / 2));
      // A quarter of --auth-timeout (2.5 s by default): long past any honest handshake.
      policy.shed_after = options_.auth_timeout / 4;
    }
    return policy;
  }

  void admit(Admitted client) {
    set_nodelay(client.fd.get());
    if (keepalive_seconds() != 0) {
      // Probes start at half the time; three unanswered ones, spread over the other half, end it.
      int idle = static_cast<int>(std::max<std::int64_t>(keepalive_seconds() / 2, 1));
      int interval = static_cast<int>(std::max<std::int64_t>(keepalive_seconds() / 6, 1));
      set_keepalive(client.fd.get(), idle, interval, 3);
    }
    strategy_->serve(std::move(client));
  }

  void shut_down(std::string_view signal_name, bool again) override {
    if (again) {
      logger_.info("{} again: stopping now", signal_name);
      loop_.stop();
      return;
    }
    stopping_ = true;
    logger_.info("shutting down ({}): closing {} clients", signal_name, room_.size());
    listener_.close();
    room_.close_all();
    if (bus_) {
      // The other servers hear who left and that this server is gone before the loop stops.
      bus_done_ = false;
      bus_->finish([this] {
        bus_done_ = true;
        stop_when_done();
      });
    }
    stop_when_done();
    loop_.add_timer(kShutdownTimeout, [this] {
      if (!members_.empty()) logger_.info("{} clients did not close in time", members_.size());
      loop_.stop();
    });
  }

  void stop_when_done() {
    if (stopping_ && members_.empty() && bus_done_) loop_.stop();
  }

  const ChatServerOptions& options_;
  ServerRuntime& runtime_;  // TLS, tokens, the loop, signals, the listener's takeover
  Logger& logger_;
  EventLoop& loop_;
  ChatAccess access_;
  SessionContext context_;
  ChatRoom room_;
  std::unique_ptr<RedisRoomBus> bus_;  // with --redis; after the room it calls, before members
  bool bus_done_ = true;
  std::uint64_t max_clients_;
  // --serve single or fork; outlives the members (fork mode's links use its fan-out).
  std::unique_ptr<ServeStrategy> strategy_;
  // Declared after the loop and the room: members unwatch their fds and leave on destruction.
  std::unordered_map<ChatMember*, std::unique_ptr<ChatMember>> members_;
  Listener listener_;  // after everything its callbacks use
  bool stopping_ = false;
};

}  // namespace

// --redis-tls-* configure a rediss:// link; given for anything else they would silently do nothing.
std::string redis_flags_problem(const ChatServerOptions& options) {
  if (!options.redis_password_file.empty() && options.redis_url.empty())
    return "--redis-password-file: needs --redis URL";
  if (!options.room_secret_file.empty() && options.redis_url.empty())
    return "--room-secret-file: needs --redis URL";
  const TlsClientConfig& tls = options.redis_tls;
  const char* given = !tls.ca_file.empty()       ? "--redis-tls-ca"
                      : !tls.server_name.empty() ? "--redis-tls-server-name"
                      : !tls.cert_file.empty()   ? "--redis-tls-cert"
                      : !tls.key_file.empty()    ? "--redis-tls-key"
                                                 : nullptr;
  if (given != nullptr && (options.redis_url.empty() || !parse_redis_url(options.redis_url).tls))
    return fmt::format("{}: needs --redis rediss://... (TLS)", given);
  if (tls.cert_file.empty() != tls.key_file.empty())
    return "--redis-tls-cert and --redis-tls-key: a client certificate needs both";
  return {};
}

std::string check_chat_server(const ChatServerOptions& options) {
  std::vector<std::string> checked;
  if (make_server_tls(options.access)) checked.emplace_back("TLS certificate and key");
  if (load_server_tokens(options.access).required()) checked.emplace_back("--token-file");
  check_redis_tls_flags(options);
  if (!options.redis_url.empty()) {
    RedisUrl url = redis_url_of(options);
    if (url.tls) (void)make_redis_tls(options.redis_tls, url.host);
    checked.emplace_back(url.tls ? "--redis URL and its TLS settings" : "--redis URL");
    if (room_mac_of(options)) checked.emplace_back("--room-secret-file");
  }
  return fmt::format("{}", fmt::join(checked, ", "));
}

int run_chat_server(const ChatServerOptions& options) {
  ServerRuntime runtime(options.common, options.access, options.serve);
  ChatServer server(options, runtime);
  return runtime.run(server);
}

}  // namespace mux
