// SingleLoopServer: `upload-server --serve single`. Owns the event loop, the listening socket and
// every UploadSession; all uploads progress at once in this one loop. Created and run by
// run_upload_server().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/event_loop.hpp"
#include "core/hangup.hpp"
#include "core/listener.hpp"
#include "core/net.hpp"
#include "upload/upload_session.hpp"
#include "upload/upload_store.hpp"

namespace mux {

class Logger;
class OutputDirectory;

class SingleLoopServer {
 public:
  SingleLoopServer(Fd listener, Logger& logger, const OutputDirectory* output_dir,
                   const UploadLimits& limits, const UploadAdmission& admission, Hangup& hangup);
  // Serves until SIGINT/SIGTERM and the shutdown grace are over.
  void run();

 private:
  void start_session(Admitted accepted);
  void on_session_finished(UploadSession& session);
  void begin_shutdown();
  void end_remaining_uploads();
  [[nodiscard]] bool at_capacity() const;

  EventLoop loop_;
  Logger& logger_;
  Hangup& hangup_;  // SIGHUP: reload hooks (TLS), or shut down when the terminal is gone
  ConnectionContext connections_;
  std::optional<Committer> committer_;  // with --output-dir; before the sessions that use it
  UploadContext context_;
  std::uint64_t max_clients_;  // 0: no limit but the fd limit
  std::unordered_map<UploadSession*, std::unique_ptr<UploadSession>> sessions_;
  Listener listener_;  // after everything its callbacks use
  std::uint64_t next_client_number_ = 1;
  bool shutting_down_ = false;
};

}  // namespace mux
