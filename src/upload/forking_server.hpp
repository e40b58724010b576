// ForkingServer: `upload-server --serve fork`. The parent, on the runtime's event loop, owns the
// listening socket, the connections admitted but not yet readable, and (through a ChildSupervisor)
// the child processes. A connection gets a process only once its first bytes have arrived (a
// Connection peeks at them and gives the socket back for the child): until then it costs the
// parent one fd and a few bytes, and it is turned away with ERR timeout when the header timeout
// passes, so idle sockets cannot become processes. The parent's ERR lines go out through the
// Listener's refusal path, so on a TLS port they are said inside TLS, never in the clear. Each
// child serves one upload (serve_one_upload) in its own fresh loop; the supervisor reaps it and the
// parent removes the temporary file of a child that died without cleaning up. Created by
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
#include "core/service/child_reports.hpp"
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
  // An admitted connection waiting for its first bytes before it gets a process.
  class Waiting;

  void admit(Admitted client);
  void on_first_bytes(Waiting& waiting);
  void on_gone(Waiting& waiting);
  void on_header_timeout(Waiting& waiting);
  void on_shed(Waiting& waiting);
  // Forgets `waiting` (destroyed after the batch: it may be inside its own callback).
  void drop(Waiting& waiting);
  void spawn_child(Waiting& waiting);
  void on_child_exit(pid_t pid, int status);
  void remove_temporary_files_of(pid_t pid, int status);
  void begin_shutdown();
  [[nodiscard]] bool has_room() const;

  EventLoop& loop_;
  Logger& logger_;
  const OutputDirectory* output_dir_;
  UploadLimits limits_;
  // The waiting connections' shared state: plain TCP (the TLS handshake runs in the child), and
  // a read buffer of one page, as they are only peeked at.
  ConnectionContext waiting_context_{loop_, 4096};
  std::unordered_map<Waiting*, std::unique_ptr<Waiting>> waiting_;
  // Each child writes its pid here once its client's header is complete (UploadContext::
  // on_header_complete); until then the parent may shed it (SIGKILL) for a newcomer at the cap.
  ChildReports header_reports_{loop_};
  ChildSupervisor children_;
  Listener listener_;  // after everything its callbacks use
  std::uint64_t next_client_number_ = 1;
  bool shutting_down_ = false;
};

// The whole life of a fork-mode child: one upload on `socket` in a fresh event loop. Returns the
// child's exit status.
int serve_one_upload(Fd socket, std::string peer, std::uint64_t client_number, Logger& logger,
                     const OutputDirectory* output_dir, const UploadLimits& limits,
                     int header_report_fd = -1);

}  // namespace mux
