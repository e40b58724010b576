// Helper threads in a process whose signals belong to an EventLoop's signalfd.
#pragma once

#include <functional>
#include <thread>

namespace mux {

// Starts a thread with every signal blocked: a signal the loop reads through its signalfd must
// never be delivered to (and its default action taken in) a helper thread instead.
std::thread start_thread_without_signals(std::function<void()> body);

}  // namespace mux
