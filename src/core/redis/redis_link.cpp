#include "core/redis/redis_link.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "core/redis/redis_connection.hpp"

namespace mux {

std::string RedisUrl::describe() const {
  bool v6 = host.find(':') != std::string::npos;
  return fmt::format("{}{}{}:{}/{}{}", v6 ? "[" : "", host, v6 ? "]" : "", port, db,
                     tls ? " (TLS)" : "");
}

namespace {

template <class Number>
bool parse_number(std::string_view text, Number& out) {
  if (text.empty()) return false;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), out);
  return error == std::errc() && end == text.data() + text.size();
}

// The URL as an error may show it: a user and password (everything between "://" and the last
// '@') become "***", so a mistyped URL never echoes its password to a log or a terminal.
std::string redacted(std::string_view text) {
  std::size_t scheme_end = text.find("://");
  std::size_t at = text.rfind('@');
  if (scheme_end == std::string_view::npos || at == std::string_view::npos || at < scheme_end)
    return std::string(text);
  return fmt::format("{}***{}", text.substr(0, scheme_end + 3), text.substr(at));
}

[[noreturn]] void bad_url(std::string_view text, std::string_view why) {
  throw std::invalid_argument(fmt::format("'{}' is not a Redis URL: {}", redacted(text), why));
}

// %XX escapes in the user and password, so that ':', '@' and '/' can be part of them.
std::string percent_decode(std::string_view text, std::string_view url) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    unsigned value = 0;
    if (i + 3 > text.size() ||
        std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16).ptr !=
            text.data() + i + 3)
      bad_url(url, "'%' must be followed by two hex digits");
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

}  // namespace

RedisUrl parse_redis_url(std::string_view text) {
  constexpr std::string_view kScheme = "redis://";
  constexpr std::string_view kTlsScheme = "rediss://";
  RedisUrl url;
  std::string_view rest;
  if (text.substr(0, kScheme.size()) == kScheme) {
    rest = text.substr(kScheme.size());
  } else if (text.substr(0, kTlsScheme.size()) == kTlsScheme) {
    rest = text.substr(kTlsScheme.size());
    url.tls = true;
  } else {
    bad_url(text, "it must start with redis:// or rediss:// (TLS)");
  }
  if (std::size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view user_info = rest.substr(0, at);
    rest = rest.substr(at + 1);
    // redis://:PASSWORD@ (AUTH PASSWORD) or redis://USER:PASSWORD@ (AUTH USER PASSWORD, Redis 6+).
    std::size_t colon = user_info.find(':');
    if (colon == std::string_view::npos) bad_url(text, "a password goes after a ':' (:PASSWORD@)");
    url.user = percent_decode(user_info.substr(0, colon), text);
    // The default user is what a one-argument AUTH means, and Redis 5 knows no other form.
    if (url.user == "default") url.user.clear();
    url.password = percent_decode(user_info.substr(colon + 1), text);
    if (url.password.empty()) bad_url(text, "empty password");
  }
  std::string_view address = rest;
  if (std::size_t slash = rest.find('/'); slash != std::string_view::npos) {
    address = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && (!parse_number(db, url.db) || url.db > 1'000'000))
      bad_url(text, "the database after '/' must be a number");
  }
  std::string_view port;
  if (!address.empty() && address.front() == '[') {
    std::size_t close = address.find(']');
    if (close == std::string_view::npos) bad_url(text, "missing ']' after an IPv6 address");
    url.host = std::string(address.substr(1, close - 1));
    std::string_view after = address.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_url(text, "expected ':PORT' after ']'");
      port = after.substr(1);
      if (port.empty()) bad_url(text, "empty port");
    }
  } else {
    std::size_t colon = address.rfind(':');
    if (colon != std::string_view::npos) {
      if (address.find(':') != colon) bad_url(text, "write an IPv6 address as [ADDRESS]");
      port = address.substr(colon + 1);
      if (port.empty()) bad_url(text, "empty port");
      address = address.substr(0, colon);
    }
    url.host = std::string(address);
  }
  if (url.host.empty()) bad_url(text, "no host");
  if (!port.empty() && (!parse_number(port, url.port) || url.port == 0))
    bad_url(text, "the port must be a number from 1 to 65535");
  return url;
}

// TlsClientContext names the client's own flags in its errors (--tls-ca FILE: ...); here they
// were given as --redis-tls-*.
std::unique_ptr<TlsClientContext> make_redis_tls(const TlsClientConfig& config,
                                                 const std::string& host) {
  try {
    return std::make_unique<TlsClientContext>(config, host);
  } catch (const TlsConfigError& error) {
    std::string message = error.what();
    for (std::size_t at = 0; (at = message.find("--tls-", at)) != std::string::npos; at += 12)
      message.replace(at, 6, "--redis-tls-");
    throw TlsConfigError(message);
  }
}

RedisLink::RedisLink(EventLoop& loop, RedisUrl url, std::string channel, Handlers handlers,
                     const TlsClientConfig& tls)
    : loop_(loop),
      url_(std::move(url)),
      channel_(std::move(channel)),
      handlers_(std::move(handlers)) {
  if (url_.tls) {
    tls_ = make_redis_tls(tls, url_.host);
    relays_ = std::make_unique<ConnectionContext>(loop_, 64 * 1024);
    relays_->handshake_timeout = kConnectTimeout;
  }
}

RedisLink::~RedisLink() {
  loop_.cancel_timer(retry_timer_);
  loop_.cancel_timer(connect_timer_);
  loop_.cancel_timer(ping_timer_);
}

void RedisLink::start() {
  connect();
}

void RedisLink::connect() {
  retry_timer_ = 0;
  early_messages_.clear();
  ready_count_ = 0;
  subscribed_ = false;
  ping_outstanding_ = false;
  auto on_failure = [this](const std::string& why) { fail(why); };
  commands_ = std::make_unique<RedisConnection>(loop_, url_, on_failure, relays_.get(), tls_.get());
  subscriber_ =
      std::make_unique<RedisConnection>(loop_, url_, on_failure, relays_.get(), tls_.get());
  connect_timer_ = loop_.add_timer(kConnectTimeout, [this] {
    connect_timer_ = 0;
    fail(fmt::format("{}: no answer within {} ms", url_.describe(), kConnectTimeout.count()));
  });
  auto check_setup = [this](std::string_view step) {
    return [this, step](const RedisValue* reply) {
      if (reply == nullptr) return;  // the failure is reported by the connection
      if (reply->is_error()) fail(fmt::format("{}: {}: {}", url_.describe(), step, reply->text));
    };
  };
  for (RedisConnection* connection : {commands_.get(), subscriber_.get()}) {
    if (url_.password.empty()) continue;
    if (url_.user.empty()) {
      connection->send({"AUTH", url_.password}, check_setup("AUTH"));
    } else {
      connection->send({"AUTH", url_.user, url_.password}, check_setup("AUTH"));
    }
  }
  if (url_.db != 0) commands_->send({"SELECT", std::to_string(url_.db)}, check_setup("SELECT"));
  commands_->send({"PING"}, [this](const RedisValue* reply) {
    if (reply != nullptr && !reply->is_error()) connection_ready();
  });
  // Redis is a peer like any other: a confirmation that comes twice, or one for another channel,
  // counts once or not at all (each extra one used to add a PING timer that outlived the link).
  subscriber_->subscribe(channel_, [this](const RedisValue* reply) {
    if (reply == nullptr || reply->type != RedisValue::Type::array || reply->elements.size() < 3)
      return;
    const std::string& kind = reply->elements[0].text;
    if (kind == "subscribe") {
      if (subscribed_ || reply->elements[1].text != channel_) return;
      subscribed_ = true;
      connection_ready();
    } else if (kind == "message" && subscribed_ && handlers_.message) {
      if (reply->elements[2].type != RedisValue::Type::string) return;
      // Subscribed before the command connection answered: the owner hears of messages only
      // once it heard "up", so these wait (a moment, with a real Redis) and come right after it.
      if (!up_) {
        if (early_messages_.size() < kMaxEarlyMessages)
          early_messages_.push_back(reply->elements[2].text);
        return;
      }
      handlers_.message(reply->elements[2].text);
    }
  });
}

void RedisLink::connection_ready() {
  if (up_ || ++ready_count_ < 2) return;
  loop_.cancel_timer(std::exchange(connect_timer_, 0));
  up_ = true;
  next_retry_ = kFirstRetry;
  ping_timer_ = loop_.add_periodic(std::chrono::milliseconds(1000), [this] { check_alive(); });
  if (handlers_.up) handlers_.up();
  for (std::string& payload : std::exchange(early_messages_, {})) {
    if (!up_) break;  // the owner's handling may have lost the link again
    if (handlers_.message) handlers_.message(payload);
  }
}

void RedisLink::check_alive() {
  if (!up_ || !commands_) return;
  if (ping_outstanding_) {
    auto now = EventLoop::Clock::now();
    if (now - ping_sent_ < stall_timeout_) return;
    // A process starved of CPU (or busy with a long batch) for the whole timeout finds the reply
    // waiting in its socket and this timer in the same batch: that is not a stalled Redis. It
    // used to drop the link then, and lose what was published while it reconnected.
    commands_->read_waiting();
    if (!ping_outstanding_ || !up_) return;
    // Redis still answers what was queued before the PING (a busy Redis, or a burst of joins'
    // scripts ahead of it): slow, not stalled. Each reconnection loses what is published
    // meanwhile, so a link making progress is given up to kMaxStall (issue 25: 14 servers
    // on a starved machine reconnected 12-30 times in a 200,000-client run).
    if (now - ping_sent_ < kMaxStall && now - commands_->last_reply() < stall_timeout_) return;
    std::chrono::milliseconds waited = stall_timeout_;
    // Each stall doubles the next allowance: a Redis starved of CPU on a loaded machine answers
    // late, not never, and every reconnection costs a full re-sync of every server's members
    // (34 servers at 500,000 clients reconnected 2,026 times, each one more work for Redis).
    stall_timeout_ = std::min(stall_timeout_ * 2, kMaxStall);
    fail(fmt::format("{}: no reply for {} ms", url_.describe(), waited.count()));
    return;
  }
  ping_outstanding_ = true;
  ping_sent_ = EventLoop::Clock::now();
  commands_->send({"PING"}, [this](const RedisValue* reply) {
    if (reply != nullptr) ping_outstanding_ = false;
  });
}

void RedisLink::fail(const std::string& why) {
  if (retry_timer_ != 0) return;  // already failed; the retry is scheduled
  bool was_up = std::exchange(up_, false);
  loop_.cancel_timer(std::exchange(connect_timer_, 0));
  loop_.cancel_timer(std::exchange(ping_timer_, 0));
  // A stalled Redis still holds the replies of a join or a nick claim: fail them now.
  if (commands_) commands_->abandon();
  if (subscriber_) subscriber_->abandon();
  // Destroying a connection frees its context; hiredis may be on the stack, so defer it.
  std::shared_ptr<RedisConnection> old_commands(std::move(commands_));
  std::shared_ptr<RedisConnection> old_subscriber(std::move(subscriber_));
  loop_.defer([old_commands, old_subscriber] {});
  retry_timer_ = loop_.add_timer(next_retry_, [this] { connect(); });
  next_retry_ = std::min(next_retry_ * 2, kMaxRetry);
  if (was_up && handlers_.down) handlers_.down(why);
  if (!was_up && handlers_.attempt_failed) handlers_.attempt_failed(why);
}

bool RedisLink::command(const std::vector<std::string>& args, ReplyCallback on_reply) {
  if (!up_ || !commands_) return false;
  return commands_->send(args, std::move(on_reply));
}

bool RedisLink::publish(std::string_view payload) {
  return command({"PUBLISH", channel_, std::string(payload)});
}

}  // namespace mux
