// InputGate: when chat-client reads its stdin. Not while lines cannot go out: before the server's
// greeting once the held lines' queue is full, while more than the limit of sent lines waits for
// the server's confirmation (a Redis room under load confirms more slowly than a pipe sends), or
// while more than the limit is queued for the socket. Reading stops after a read (keep_reading)
// and resumes when what it waited for happened. Pure: unit tested in-process.
#pragma once

#include <cstddef>

namespace mux::chat {

class InputGate {
 public:
  explicit InputGate(std::size_t limit) : limit_(limit) {}

  // After a read: whether to read on. `ready`: the greeting came; `held_full`: the lines held
  // until then fill their queue; `unconfirmed`: bytes sent and not confirmed; `queued()`: bytes
  // queued for the socket (asked last, after the caller's flush).
  template <typename Queued>
  bool keep_reading(bool ready, bool held_full, std::size_t unconfirmed, Queued&& queued) {
    if (!ready) {
      if (!held_full) return true;
      wait_ = Wait::greeting;
      return false;
    }
    if (unconfirmed > limit_) {
      wait_ = Wait::acks;
      return false;
    }
    if (queued() <= limit_) return true;
    wait_ = Wait::drain;
    return false;
  }
  // Each returns true when stdin may be read again (it waited for this).
  bool greeted() { return resume_if(Wait::greeting, true); }
  bool confirmed(std::size_t unconfirmed) {
    return resume_if(Wait::acks, unconfirmed <= limit_ / 2);
  }
  bool drained(std::size_t queued) { return resume_if(Wait::drain, queued == 0); }

 private:
  enum class Wait { none, greeting, acks, drain };
  bool resume_if(Wait wait, bool done) {
    if (wait_ != wait || !done) return false;
    wait_ = Wait::none;
    return true;
  }

  std::size_t limit_;
  Wait wait_ = Wait::none;
};

}  // namespace mux::chat
