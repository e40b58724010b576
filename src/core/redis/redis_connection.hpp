// RedisConnection: one hiredis async connection registered with mux's EventLoop: hiredis's
// adapter hooks (addRead, delWrite, cleanup...) become epoll interest, its reply callbacks become
// RedisLink::ReplyCallbacks with the reply copied out of hiredis (RedisValue), and every reply is
// checked by a RedisReplyGuard as hiredis's reader builds it. rediss:// connects hiredis to a
// RedisTlsBridge instead of the server. Owned by RedisLink (core/redis/redis_link.hpp), which has
// two: commands and the subscription. A failure is reported once, through `on_failure`, from a
// deferred call (never from inside hiredis), and every callback still waiting then hears a null
// reply, so no caller waits forever.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/redis/redis_link.hpp"
#include "core/redis/redis_reply_guard.hpp"
#include "core/redis/redis_tls_bridge.hpp"
#include "core/tls/tls_context.hpp"

struct redisAsyncContext;

namespace mux {

class RedisConnection {
 public:
  using Failure = std::function<void(const std::string& why)>;

  // `relays` and `tls` are set for rediss:// only: hiredis then connects to a TLS bridge.
  RedisConnection(EventLoop& loop, const RedisUrl& url, Failure on_failure,
                  ConnectionContext* relays, const TlsClientContext* tls);
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  ~RedisConnection();

  // Sends a command (binary-safe arguments); false when this connection cannot.
  bool send(const std::vector<std::string>& args, RedisLink::ReplyCallback on_reply);
  // Every message and the subscription's confirmations go to `on_message` (kSubscriptionId).
  bool subscribe(const std::string& channel, RedisLink::ReplyCallback on_message);

  [[nodiscard]] bool failed() const noexcept { return failed_; }

  // The link gives this connection up (a stall, a failed setup step): every callback still
  // waiting hears of it with a null reply, from a deferred call, so no caller waits forever.
  void abandon();

  // When the last reply (or subscribed message) arrived: Redis answers in order, so a reply to
  // something sent before a PING means the PING's answer is on its way.
  [[nodiscard]] EventLoop::Clock::time_point last_reply() const noexcept { return last_reply_; }

  // Reads what already waits in the socket, outside the loop's turn: used before a missing
  // reply is blamed on Redis, since this process may have been the late one.
  void read_waiting();

 private:
  static constexpr std::uint64_t kSubscriptionId = 1;

  // hiredis frees a context itself when the connection fails; we free it only while we still own
  // it.
  struct AsyncContextFree {
    void operator()(redisAsyncContext* context) const noexcept;
  };

  static void reply_trampoline(redisAsyncContext* ac, void* reply, void* privdata);
  void want(std::uint32_t bit, bool on);
  void handle(std::uint32_t events);
  // hiredis is freeing the context (a failure it found); it is no longer ours to free.
  void released();
  void lost(const char* why);
  // The TLS bridge's reason already names the address.
  void lost(const std::string& why);
  void report(std::string why);

  EventLoop& loop_;
  Failure on_failure_;
  // Declared before the context: destroyed after hiredis has let go of its end (the reader
  // calls the guard's functions until it is freed).
  RedisReplyGuard guard_;
  std::unique_ptr<RedisTlsBridge> bridge_;
  std::unique_ptr<redisAsyncContext, AsyncContextFree> context_;
  std::unordered_map<std::uint64_t, RedisLink::ReplyCallback> pending_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::string address_;
  std::uint64_t next_id_ = kSubscriptionId + 1;
  int fd_ = -1;
  std::uint32_t interest_ = 0;
  bool failed_ = false;
  EventLoop::Clock::time_point last_reply_{};
};

}  // namespace mux
