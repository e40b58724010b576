// SingleLoopServer: `upload-server --serve single`. Owns the listening socket and every
// UploadSession; all uploads progress at once in the runtime's one loop. Created by
// run_upload_server() and run by its ServerRuntime (signals, SIGHUP, readiness).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "core/loop/event_loop.hpp"
#include "core/loop/listener.hpp"
#include "core/loop/net.hpp"
#include "core/service/server_runtime.hpp"
#include "upload/upload_serving.hpp"
#include "upload/upload_session.hpp"
#include "upload/upload_store.hpp"

namespace mux {

class Logger;
class OutputDirectory;

class SingleLoopServer final : public ServerRuntime::Service {
 public:
  SingleLoopServer(EventLoop& loop, Fd listener, Logger& logger, const OutputDirectory* output_dir,
                   const UploadLimits& limits, const UploadAdmission& admission);
  // Accepts until shut down; the loop stops once the shutdown grace is over.
  void start() override;
  void shut_down(std::string_view signal_name, bool again) override;

 private:
  void start_session(Admitted accepted);
  void on_session_finished(UploadSession& session);
  void begin_shutdown();
  void end_remaining_uploads();
  [[nodiscard]] bool at_capacity() const;

  EventLoop& loop_;
  Logger& logger_;
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
