// Process-per-client serving: fork a child that keeps only the fds it needs and runs its own
// fresh EventLoop, and reap children in the parent. Used by both servers' --serve fork.
#pragma once

#include <sys/types.h>

#include <functional>
#include <initializer_list>

namespace mux {

class Logger;

// Forks. In the child: every fd except 0, 1, 2 and `keep` is closed (the listener, the parent's
// epoll and signal fds, other clients' sockets), the signal mask and the SIGCHLD disposition are
// reset (SIGPIPE stays ignored: that disposition is inherited), `body` runs, and the child leaves
// with _exit(body's return value) — it never returns into the parent's stack. In the parent:
// returns the child's pid. Throws on fork failure.
pid_t fork_child(std::initializer_list<int> keep, Logger* logger, const std::function<int()>& body);

// Reaps every child that has exited, without blocking; calls on_exit(pid, wait status) for each.
// Call it from the loop's SIGCHLD handler (signals coalesce, so one call may reap several).
void reap_children(const std::function<void(pid_t, int)>& on_exit);

}  // namespace mux
