#include "core/base/threads.hpp"

#include <csignal>

namespace mux {

std::thread start_thread_without_signals(std::function<void()> body) {
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  // The new thread inherits the mask in force when it is created; the caller's is put back.
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  std::thread thread(std::move(body));
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return thread;
}

}  // namespace mux
