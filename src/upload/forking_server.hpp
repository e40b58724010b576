// ForkingServer: `upload-server --serve fork`. The parent, on the runtime's event loop, owns the
// listening socket, every connection until its header is complete, and (through a
// ChildSupervisor) the child processes. Until its header is complete a connection is an
// UploadSession of the parent's loop exactly as in single mode (allow/deny at accept before any
// TLS byte, the TLS handshake, the header's deadlines and --min-rate, shedding the idlest while
// full, the token check, every ERR before the body, inside TLS on a TLS port), so a socket that
// never completes a header never costs a process (issue 21, E3). Then the session hands it to a
// child forked on the spot: the child inherits the connection's state through fork() (the TLS
// session mid-stream, the bytes already read) and serves the upload (serve_handed_upload) in a
// fresh loop; the parent forgets its copy without writing a byte. The supervisor reaps children
// and the parent removes the temporary file of one that died without cleaning up. Created by
// run_upload_server() and run by its ServerRuntime (signals, SIGHUP, readiness).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/listener.hpp"
#include "core/loop/net.hpp"
#include "core/service/child_supervisor.hpp"
#include "core/service/server_runtime.hpp"
#include "upload/upload_serving.hpp"
#include "upload/upload_session.hpp"

namespace mux {

class Logger;
class OutputDirectory;

class ForkingServer final : public ServerRuntime::Service {
 public:
  ForkingServer(EventLoop& loop, Fd listener, Logger& logger, const OutputDirectory* output_dir,
                const UploadLimits& limits, const UploadAdmission& admission);
  ForkingServer(const ForkingServer&) = delete;
  ForkingServer& operator=(const ForkingServer&) = delete;
  ~ForkingServer();
  // Accepts until shut down; the loop stops once every child has exited.
  void start() override;
  void shut_down(std::string_view signal_name, bool again) override;

 private:
  void admit(Admitted client);
  void on_session_finished(UploadSession& session);
  // The session's header is complete: forks its child. False when no process could be started.
  bool spawn_child(UploadSession& session);
  void on_child_exit(pid_t pid, int status);
  void remove_temporary_files_of(pid_t pid, int status);
  void begin_shutdown();
  // Shutting down: stops the loop once no child and no connection is left (or soon after the
  // last child, for connections still closing).
  void stop_when_done();
  [[nodiscard]] bool has_room() const;

  EventLoop& loop_;
  Logger& logger_;
  const OutputDirectory* output_dir_;
  UploadLimits limits_;
  // The sessions before their header (the TLS handshake runs here): reads of kPreHeaderReadBytes,
  // since the body is a child's to read.
  ConnectionContext connections_;
  UploadContext context_;
  std::unordered_map<UploadSession*, std::unique_ptr<UploadSession>> sessions_;
  ChildSupervisor children_;
  Listener listener_;  // after everything its callbacks use
  std::uint64_t next_client_number_ = 1;
  bool shutting_down_ = false;
  EventLoop::TimerId final_wait_ = 0;
};

// The whole life of a fork-mode child: the upload on the connection `handed` (whose header the
// parent read) in a fresh event loop. Returns the child's exit status.
int serve_handed_upload(UploadSession::HandedOver handed, std::string peer,
                        std::uint64_t client_number, Logger& logger,
                        const OutputDirectory* output_dir, const UploadLimits& limits);

}  // namespace mux
