#include "core/redis/redis_reply_guard.hpp"

#include <hiredis/hiredis.h>
#include <strings.h>

#include <utility>

#include <fmt/format.h>

namespace mux {
namespace {

bool is_word(std::string_view text, std::string_view word) {
  return text.size() == word.size() && strncasecmp(text.data(), word.data(), word.size()) == 0;
}

}  // namespace

void RedisReplyGuard::install(redisReader& reader) {
  defaults_ = reader.fn;
  checked_ = *defaults_;
  checked_.createString = &create_string;
  checked_.createArray = &create_array;
  checked_.createInteger = &create_integer;
  checked_.createNil = &create_nil;
  reader.fn = &checked_;
  reader.privdata = this;
}

bool RedisReplyGuard::check_buffered(const redisReader& reader) {
  if (reader.len - reader.pos <= kMaxReplyBytes) return true;
  return refuse(fmt::format("a reply of more than {} MiB", kMaxReplyBytes >> 20));
}

bool RedisReplyGuard::refuse(std::string why) {
  if (refused_.empty()) refused_ = fmt::format("refused {} (a broken or hostile Redis)", why);
  return false;
}

bool RedisReplyGuard::allows(const redisReadTask* task, int type, std::string_view text,
                             int elements) {
  if (text.size() > kMaxReplyBytes)
    return refuse(fmt::format("a {}-byte string in a reply", text.size()));
  if (task->parent == nullptr) {
    in_message_ = false;
    if (expected_ > 0) {  // a command's reply: any shape is the caller's to judge
      --expected_;
      return true;
    }
    // hiredis ends the connection itself on an error nobody asked for, with its text.
    if (type == REDIS_REPLY_ERROR && !subscribed_) return true;
    if (!subscribed_) return refuse("a reply to no command");
    if (type != REDIS_REPLY_ARRAY || elements != 3)
      return refuse("a pub/sub message that is not an array of 3");
    in_message_ = true;
    return true;
  }
  if (!in_message_) return true;
  // An element of a pub/sub message: [kind, channel, payload or count], nothing nested.
  if (task->parent->parent != nullptr || type == REDIS_REPLY_ARRAY)
    return refuse("a nested pub/sub message");
  if (task->idx < 2 && type != REDIS_REPLY_STRING)
    return refuse("a pub/sub message whose kind or channel is not a string");
  // hiredis asserts on an unsubscribe's count and routes p* kinds elsewhere; mux only ever
  // subscribes to one channel, so those two kinds are all a real Redis sends it.
  if (task->idx == 0 && !is_word(text, "subscribe") && !is_word(text, "message"))
    return refuse("a pub/sub message of an unknown kind");
  if (task->idx == 2 && type != REDIS_REPLY_STRING && type != REDIS_REPLY_INTEGER)
    return refuse("a pub/sub message whose payload is not a string");
  return true;
}

void* RedisReplyGuard::create_string(const redisReadTask* task, char* text, std::size_t length) {
  RedisReplyGuard& guard = of(task);
  if (!guard.allows(task, task->type, std::string_view(text, length), 0)) return nullptr;
  return guard.defaults_->createString(task, text, length);
}

void* RedisReplyGuard::create_array(const redisReadTask* task, int elements) {
  RedisReplyGuard& guard = of(task);
  if (!guard.allows(task, REDIS_REPLY_ARRAY, {}, elements)) return nullptr;
  return guard.defaults_->createArray(task, elements);
}

void* RedisReplyGuard::create_integer(const redisReadTask* task, long long value) {
  RedisReplyGuard& guard = of(task);
  if (!guard.allows(task, REDIS_REPLY_INTEGER, {}, 0)) return nullptr;
  return guard.defaults_->createInteger(task, value);
}

void* RedisReplyGuard::create_nil(const redisReadTask* task) {
  RedisReplyGuard& guard = of(task);
  if (!guard.allows(task, REDIS_REPLY_NIL, {}, 0)) return nullptr;
  return guard.defaults_->createNil(task);
}

}  // namespace mux
