// ForkingServer: `upload-server --serve fork`. The parent owns the event loop, the listening
// socket and the set of live children; each accepted connection is served by a child process
// (serve_one_upload) with its own fresh loop, and the parent reaps every child on SIGCHLD.
// Created and run by run_upload_server().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <unordered_set>

#include "core/event_loop.hpp"
#include "core/listener.hpp"
#include "core/net.hpp"
#include "upload/upload_session.hpp"

namespace mux {

class Logger;
class OutputDirectory;

class ForkingServer {
 public:
  ForkingServer(Fd listener, Logger& logger, const OutputDirectory* output_dir,
                const UploadLimits& limits, std::uint64_t max_clients);
  // Serves until SIGINT/SIGTERM and every child has exited.
  void run();

 private:
  void spawn_child(Admitted accepted);
  void reap();
  void remove_temporary_files_of(pid_t pid, int status);
  void begin_shutdown();
  void signal_children(int signo);
  [[nodiscard]] bool at_capacity() const;

  EventLoop loop_;
  Logger& logger_;
  const OutputDirectory* output_dir_;
  UploadLimits limits_;
  std::uint64_t max_clients_;
  std::unordered_set<pid_t> children_;
  Listener listener_;  // after everything its callbacks use
  std::uint64_t next_client_number_ = 1;
  bool shutting_down_ = false;
};

// The whole life of a fork-mode child: one upload on `socket` in a fresh event loop. Returns the
// child's exit status.
int serve_one_upload(Fd socket, std::string peer, std::uint64_t client_number, Logger& logger,
                     const OutputDirectory* output_dir, const UploadLimits& limits);

}  // namespace mux
