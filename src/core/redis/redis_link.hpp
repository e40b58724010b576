// RedisLink: one logical link to a Redis server, driven by mux's EventLoop through hiredis's async
// adapter hooks (no hand-written RESP parser, no thread). It owns two hiredis connections: one for
// commands and one subscribed to a single pub/sub channel (a subscribed Redis connection takes no
// other commands). The link is "up" once both are connected, authenticated (AUTH), on the right
// database (SELECT) and subscribed; while it is down it reconnects with a capped backoff. Its owner
// (the chat room's Redis bus) calls command()/publish() and gets up/down/message callbacks, always
// from the loop and never from inside a hiredis call.
//
// Liveness: a PING on the command connection every second; no answer for kStallTimeout counts as
// a lost link (a stopped Redis keeps its sockets open), unless replies to earlier commands still
// arrive: a busy Redis gets up to kMaxStall. Each stall doubles the next allowance (up to
// kMaxStall): a Redis starved of CPU answers late, and a reconnection costs a re-sync. Host names
// are resolved by hiredis with a blocking getaddrinfo when connecting: give an address (or a name
// in /etc/hosts).
//
// rediss:// (TLS): hiredis 0.14 has no TLS, so each hiredis connection talks through a
// RedisTlsBridge (core/redis/redis_tls_bridge.hpp) that relays its bytes over mux's own TlsStream,
// verified like chat-client's --tls (trust store or --redis-tls-ca, the host's name or
// --redis-tls-server-name, optional client certificate).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

// redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]; HOST may be [v6]. Port defaults to 6379, DB to
// 0; USER and PASSWORD may hold %XX escapes (for ':', '@', '/'). rediss:// means TLS.
struct RedisUrl {
  std::string host;
  std::uint16_t port = 6379;
  std::string user;  // an ACL user (Redis 6+); empty: AUTH with the password alone
  std::string password;
  std::uint32_t db = 0;
  bool tls = false;

  // "HOST:PORT/DB", never the user or password (for logs and messages).
  [[nodiscard]] std::string describe() const;
};

// Throws std::invalid_argument saying what is wrong with `text`.
RedisUrl parse_redis_url(std::string_view text);

// The TLS context for a rediss:// link to `host`; TlsConfigError messages name the --redis-tls-*
// flags. Also what chat-server --check loads.
std::unique_ptr<TlsClientContext> make_redis_tls(const TlsClientConfig& config,
                                                 const std::string& host);

// A reply, copied out of hiredis's reply tree so nothing of hiredis leaks to callers.
struct RedisValue {
  enum class Type { nil, integer, string, status, error, array };
  Type type = Type::nil;
  long long integer = 0;
  std::string text;  // string, status and error replies
  std::vector<RedisValue> elements;

  [[nodiscard]] bool is_error() const noexcept { return type == Type::error; }
};

class RedisConnection;

class RedisLink {
 public:
  // Null when the link was lost before the reply came.
  using ReplyCallback = std::function<void(const RedisValue* reply)>;
  struct Handlers {
    std::function<void()> up;                          // connected, subscribed
    std::function<void(const std::string& why)> down;  // lost (only after an up)
    std::function<void(std::string_view payload)> message;
    std::function<void(const std::string& why)> attempt_failed;  // a connect that did not succeed
  };

  static constexpr std::chrono::milliseconds kConnectTimeout{3000};
  static constexpr std::chrono::milliseconds kStallTimeout{3000};
  // ...unless other replies still arrive: then the PING may wait this long.
  static constexpr std::chrono::milliseconds kMaxStall{24000};
  static constexpr std::chrono::milliseconds kFirstRetry{100};
  static constexpr std::chrono::milliseconds kMaxRetry{2000};

  // `tls` is used with a rediss:// URL only; a bad file in it throws TlsConfigError naming the
  // --redis-tls-* flag.
  RedisLink(EventLoop& loop, RedisUrl url, std::string channel, Handlers handlers,
            const TlsClientConfig& tls = {});
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;
  ~RedisLink();

  // Starts connecting; retries on its own from then on.
  void start();
  [[nodiscard]] bool up() const noexcept { return up_; }
  // Sends a command (binary-safe arguments). False, and no callback, when the link is down.
  bool command(const std::vector<std::string>& args, ReplyCallback on_reply = {});
  bool publish(std::string_view payload);
  [[nodiscard]] const RedisUrl& url() const noexcept { return url_; }

 private:
  void connect();
  void connection_ready();
  void fail(const std::string& why);
  void check_alive();

  EventLoop& loop_;
  RedisUrl url_;
  std::string channel_;
  Handlers handlers_;
  std::unique_ptr<TlsClientContext> tls_;      // rediss:// only
  std::unique_ptr<ConnectionContext> relays_;  // the TLS bridges' connections (rediss:// only)
  std::unique_ptr<RedisConnection> commands_;
  std::unique_ptr<RedisConnection> subscriber_;
  EventLoop::TimerId retry_timer_ = 0;
  EventLoop::TimerId connect_timer_ = 0;
  EventLoop::TimerId ping_timer_ = 0;
  std::chrono::milliseconds next_retry_ = kFirstRetry;
  EventLoop::Clock::time_point ping_sent_{};
  bool ping_outstanding_ = false;
  std::chrono::milliseconds stall_timeout_ = kStallTimeout;  // doubled by each stall
  int ready_count_ = 0;
  // Messages that came after the subscription was confirmed but before the link was up.
  std::vector<std::string> early_messages_;
  static constexpr std::size_t kMaxEarlyMessages = 1024;
  bool subscribed_ = false;  // this attempt's subscription confirmed (a repeat is ignored)
  bool up_ = false;
};

}  // namespace mux
