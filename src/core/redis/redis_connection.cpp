#include "core/redis/redis_connection.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/epoll.h>

#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace mux {

namespace {

// A reply, copied out of hiredis's tree: nothing of hiredis reaches RedisLink's callers.
RedisValue copy_reply(const redisReply& reply) {
  RedisValue value;
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      value.type = RedisValue::Type::integer;
      value.integer = reply.integer;
      break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      value.type = reply.type == REDIS_REPLY_STRING   ? RedisValue::Type::string
                   : reply.type == REDIS_REPLY_STATUS ? RedisValue::Type::status
                                                      : RedisValue::Type::error;
      value.text.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_ARRAY:
      value.type = RedisValue::Type::array;
      value.elements.reserve(reply.elements);
      for (std::size_t i = 0; i < reply.elements; ++i)
        value.elements.push_back(copy_reply(*reply.element[i]));
      break;
    default:
      break;  // nil
  }
  return value;
}

}  // namespace

void RedisConnection::AsyncContextFree::operator()(redisAsyncContext* context) const noexcept {
  redisAsyncFree(context);
}

RedisConnection::RedisConnection(EventLoop& loop, const RedisUrl& url, Failure on_failure,
                                 ConnectionContext* relays, const TlsClientContext* tls)
    : loop_(loop), on_failure_(std::move(on_failure)) {
  if (relays != nullptr && tls != nullptr) {
    try {
      bridge_ = std::make_unique<RedisTlsBridge>(*relays, *tls, url.host, url.port, url.describe(),
                                                 [this](const std::string& why) { lost(why); });
      context_.reset(redisAsyncConnectUnix(bridge_->path().c_str()));
      if (context_ && context_->err == 0) bridge_->accept_local();
    } catch (const std::system_error& error) {
      context_.reset();
      report(fmt::format("{}: {}", url.describe(), error.what()));
      return;
    }
  } else {
    context_.reset(redisAsyncConnect(url.host.c_str(), url.port));
  }
  if (!context_) {
    report(fmt::format("{}: out of memory", url.describe()));
    return;
  }
  if (context_->err != 0) {
    std::string why = context_->errstr;
    context_.reset();
    report(fmt::format("{}: {}", url.describe(), why));
    return;
  }
  address_ = url.describe();
  redisAsyncContext& context = *context_;
  guard_.install(*context.c.reader);
  context.data = this;
  context.ev.data = this;
  context.ev.addRead = [](void* self) { static_cast<RedisConnection*>(self)->want(EPOLLIN, true); };
  context.ev.delRead = [](void* self) {
    static_cast<RedisConnection*>(self)->want(EPOLLIN, false);
  };
  context.ev.addWrite = [](void* self) {
    static_cast<RedisConnection*>(self)->want(EPOLLOUT, true);
  };
  context.ev.delWrite = [](void* self) {
    static_cast<RedisConnection*>(self)->want(EPOLLOUT, false);
  };
  context.ev.cleanup = [](void* self) { static_cast<RedisConnection*>(self)->released(); };
  redisAsyncSetConnectCallback(&context, [](const redisAsyncContext* ac, int status) {
    if (status != REDIS_OK && ac->data != nullptr)
      static_cast<RedisConnection*>(ac->data)->lost(ac->c.errstr);
  });
  redisAsyncSetDisconnectCallback(&context, [](const redisAsyncContext* ac, int) {
    if (ac->data != nullptr)
      static_cast<RedisConnection*>(ac->data)->lost(ac->c.err != 0 ? ac->c.errstr : "closed");
  });
  fd_ = context.c.fd;
  // The connect completes on the first writable event.
  interest_ = EPOLLOUT;
  loop_.watch(fd_, interest_, [this](std::uint32_t events) { handle(events); });
}

RedisConnection::~RedisConnection() {
  *alive_ = false;
  if (!context_) return;
  // Freeing calls the pending reply callbacks with no reply; they must not reach us.
  context_->data = nullptr;
  if (loop_.watching(fd_)) loop_.unwatch(fd_);
  context_->ev.cleanup = nullptr;
  context_.reset();
}

bool RedisConnection::send(const std::vector<std::string>& args,
                           RedisLink::ReplyCallback on_reply) {
  if (!context_ || failed_) return false;
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (const std::string& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  std::uint64_t id = next_id_++;
  int status = redisAsyncCommandArgv(context_.get(), &RedisConnection::reply_trampoline,
                                     reinterpret_cast<void*>(static_cast<std::uintptr_t>(id)),
                                     static_cast<int>(args.size()), argv.data(), lengths.data());
  if (status != REDIS_OK) return false;
  guard_.expect_reply();
  if (on_reply) pending_.emplace(id, std::move(on_reply));
  return true;
}

bool RedisConnection::subscribe(const std::string& channel, RedisLink::ReplyCallback on_message) {
  if (!context_ || failed_) return false;
  pending_[kSubscriptionId] = std::move(on_message);
  const char* argv[] = {"SUBSCRIBE", channel.data()};
  std::size_t lengths[] = {9, channel.size()};
  if (redisAsyncCommandArgv(context_.get(), &RedisConnection::reply_trampoline,
                            reinterpret_cast<void*>(static_cast<std::uintptr_t>(kSubscriptionId)),
                            2, argv, lengths) != REDIS_OK)
    return false;
  guard_.subscribed();
  return true;
}

void RedisConnection::abandon() {
  failed_ = true;
  auto callbacks = std::exchange(pending_, {});
  loop_.defer([callbacks = std::move(callbacks)]() mutable {
    for (auto& [id, callback] : callbacks) {
      if (id != kSubscriptionId && callback) callback(nullptr);
    }
  });
}

void RedisConnection::read_waiting() {
  if (!context_) return;
  pollfd waiting{fd_, POLLIN, 0};
  if (::poll(&waiting, 1, 0) > 0 && (waiting.revents & (POLLIN | POLLERR | POLLHUP)) != 0)
    handle(EPOLLIN);
}

void RedisConnection::reply_trampoline(redisAsyncContext* ac, void* reply, void* privdata) {
  if (ac->data == nullptr) return;
  auto& self = *static_cast<RedisConnection*>(ac->data);
  auto id = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(privdata));
  auto it = self.pending_.find(id);
  if (it == self.pending_.end()) return;
  if (reply == nullptr) return;  // lost: lost() hands every pending callback a null reply
  self.last_reply_ = EventLoop::Clock::now();
  RedisValue value = copy_reply(*static_cast<redisReply*>(reply));
  if (id == kSubscriptionId) {
    it->second(&value);
    return;
  }
  RedisLink::ReplyCallback callback = std::move(it->second);
  self.pending_.erase(it);
  callback(&value);
}

void RedisConnection::want(std::uint32_t bit, bool on) {
  interest_ = on ? (interest_ | bit) : (interest_ & ~bit);
  if (loop_.watching(fd_)) loop_.modify(fd_, interest_);
}

void RedisConnection::handle(std::uint32_t events) {
  // Errors and hang-ups are found by reading (or, while connecting, by the connect check).
  if (failed_) return;  // given up: nothing more is read into it
  if (context_ && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0) {
    redisAsyncHandleRead(context_.get());
    if (context_ && !guard_.check_buffered(*context_->c.reader)) {
      lost(guard_.refused());
      return;
    }
  }
  if (context_ && (events & EPOLLOUT) != 0) redisAsyncHandleWrite(context_.get());
}

void RedisConnection::released() {
  if (loop_.watching(fd_)) loop_.unwatch(fd_);
  redisAsyncContext* context = context_.release();
  if (!failed_) lost(context->c.err != 0 ? context->c.errstr : "connection closed");
}

void RedisConnection::lost(const char* why) {
  if (failed_) return;
  failed_ = true;
  // A refused reply surfaces from hiredis's reader as "Out of memory": say what it was.
  if (!guard_.refused().empty()) why = guard_.refused().c_str();
  report(fmt::format("{}: {}", address_, why != nullptr && *why != '\0' ? why : "lost"));
}

void RedisConnection::lost(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  report(why);
}

void RedisConnection::report(std::string why) {
  failed_ = true;
  // Pending callbacks hear of the loss too, after hiredis is done with the context.
  auto callbacks = std::exchange(pending_, {});
  std::weak_ptr<bool> alive = alive_;
  loop_.defer([alive, callbacks = std::move(callbacks), why = std::move(why),
               on_failure = on_failure_]() mutable {
    for (auto& [id, callback] : callbacks) {
      if (id != kSubscriptionId && callback) callback(nullptr);
    }
    if (auto flag = alive.lock(); flag && *flag) on_failure(why);
  });
}

}  // namespace mux
