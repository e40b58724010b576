// RedisReplyGuard: checks each reply as hiredis's reader builds it, before hiredis's async layer
// sees it. That layer asserts (aborts the whole process) on replies a real Redis never sends:
// one more reply than there were commands, or a pub/sub message that is not an array whose
// first two elements are strings (found by the redis_reply fuzz target; one such reply from a
// hostile or broken Redis killed chat-server, and in fork mode every client with it). Redis is a
// peer like any other: a reply that would reach those asserts, or one too large, makes the reader
// fail instead, which ends that connection; the link reconnects as after any loss.
//
// One per hiredis connection, owned by RedisConnection (core/redis/redis_link.cpp), which tells it
// of every command sent and of the subscription. Knows nothing of what the replies mean.
#pragma once

#include <hiredis/read.h>

#include <cstddef>
#include <string>

namespace mux {

class RedisReplyGuard {
 public:
  // The most a reply may hold: one string, or the bytes waiting for one reply to complete.
  static constexpr std::size_t kMaxReplyBytes = 64 << 20;

  RedisReplyGuard() = default;
  RedisReplyGuard(const RedisReplyGuard&) = delete;
  RedisReplyGuard& operator=(const RedisReplyGuard&) = delete;

  // Puts itself between `reader` and the reader's reply functions; must outlive the reader.
  void install(redisReader& reader);
  // A command went out: one more reply is owed, whatever its shape.
  void expect_reply() noexcept { ++expected_; }
  // SUBSCRIBE went out: from now on replies nobody asked for must be pub/sub messages.
  void subscribed() noexcept { subscribed_ = true; }
  // Why the last reply was refused; empty when none was.
  [[nodiscard]] const std::string& refused() const noexcept { return refused_; }
  // After a read: false (and refused() says why) when more than kMaxReplyBytes wait unparsed.
  bool check_buffered(const redisReader& reader);

 private:
  static RedisReplyGuard& of(const redisReadTask* task) {
    return *static_cast<RedisReplyGuard*>(task->privdata);
  }
  static void* create_string(const redisReadTask* task, char* text, std::size_t length);
  static void* create_array(const redisReadTask* task, int elements);
  static void* create_integer(const redisReadTask* task, long long value);
  static void* create_nil(const redisReadTask* task);

  // Whether an object of `type` may be made at `task`; records why not.
  bool allows(const redisReadTask* task, int type, std::string_view text, int elements);
  bool refuse(std::string why);

  redisReplyObjectFunctions checked_{};
  redisReplyObjectFunctions* defaults_ = nullptr;
  std::size_t expected_ = 0;  // replies owed to commands sent
  bool subscribed_ = false;
  bool in_message_ = false;  // the reply being built is a pub/sub message, not a command's
  std::string refused_;
};

}  // namespace mux
