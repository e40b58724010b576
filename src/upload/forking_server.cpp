#include "upload/forking_server.hpp"

#include <sys/socket.h>
#include <sys/wait.h>

#include <csignal>
#include <cstring>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "core/child_process.hpp"
#include "core/logger.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_session.hpp"
#include "upload/upload_store.hpp"

namespace mux {
namespace {

// Children get the same grace as the parent gives them, plus time to reply and exit; one still
// alive after that is hung and is killed so the server can exit.
constexpr std::chrono::seconds kChildKillDelay = kShutdownGrace + std::chrono::seconds{3};

}  // namespace

ForkingServer::ForkingServer(Fd listener, Logger& logger, const OutputDirectory* output_dir,
                             const UploadLimits& limits, std::uint64_t max_clients)
    : logger_(logger),
      output_dir_(output_dir),
      limits_(limits),
      max_clients_(max_clients),
      listener_(loop_, std::move(listener), logger,
                AdmissionPolicy::wait_for_room([this] { return !at_capacity(); }),
                [this](Admitted accepted) { spawn_child(std::move(accepted)); }) {}

void ForkingServer::run() {
  // Registered before the first fork, so no child can exit unnoticed.
  loop_.on_signal(SIGCHLD, [this] { reap(); });
  loop_.on_signal(SIGINT, [this] { begin_shutdown(); });
  loop_.on_signal(SIGTERM, [this] { begin_shutdown(); });
  listener_.resume();
  loop_.run();
}

bool ForkingServer::at_capacity() const {
  return max_clients_ != 0 && children_.size() >= max_clients_;
}

void ForkingServer::spawn_child(Admitted accepted) {
  std::uint64_t number = next_client_number_++;
  logger_.detail("[Client {}] {} connected", number, accepted.peer);
  int socket_fd = accepted.fd.get();
  int dir_fd = output_dir_ != nullptr ? output_dir_->fd() : -1;
  try {
    pid_t pid = fork_child({socket_fd, dir_fd}, &logger_, [&] {
      return serve_one_upload(std::move(accepted.fd), accepted.peer, number, logger_, output_dir_,
                              limits_);
    });
    children_.insert(pid);
    logger_.detail("[Client {}] served by process {}", number, pid);
  } catch (const std::system_error& error) {
    logger_.info("[Client {}] {} refused: {}", number, accepted.peer, error.what());
    std::string reply = format_err_reply("server busy: cannot start a process");
    (void)::send(socket_fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  // The parent's copy of the socket closes here; the child has its own.
}

void ForkingServer::reap() {
  reap_children([this](pid_t pid, int status) {
    children_.erase(pid);
    if (WIFSIGNALED(status)) {
      logger_.info("process {} was killed by signal {} ({})", pid, WTERMSIG(status),
                   ::strsignal(WTERMSIG(status)));
    } else {
      logger_.detail("process {} exited with status {}", pid, WEXITSTATUS(status));
    }
    remove_temporary_files_of(pid, status);
  });
  if (shutting_down_) {
    if (children_.empty()) loop_.stop();
  } else if (!at_capacity()) {
    listener_.resume();
  }
}

void ForkingServer::remove_temporary_files_of(pid_t pid, int status) {
  // A child that exited normally removed its own file; one killed (kill -9, the OOM killer, our
  // own SIGKILL at shutdown) or failing could not. The pid in the file name says whose it was.
  if (output_dir_ == nullptr || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) return;
  std::size_t removed = output_dir_->remove_partials_of(pid);
  if (removed != 0) {
    logger_.info("removed {} temporary file(s) of process {} from {}", removed, pid,
                 output_dir_->path());
  }
}

void ForkingServer::signal_children(int signo) {
  for (pid_t pid : children_)
    ::kill(pid, signo);
}

void ForkingServer::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  listener_.close();
  logger_.info("shutting down: {} upload process(es) running", children_.size());
  if (children_.empty()) {
    loop_.stop();
    return;
  }
  // Each child runs the same grace as the single-loop server. A child started by a terminal's
  // Ctrl-C already has its SIGINT; the extra SIGTERM changes nothing for it.
  signal_children(SIGTERM);
  loop_.add_timer(kChildKillDelay, [this] { signal_children(SIGKILL); });
}

int serve_one_upload(Fd socket, std::string peer, std::uint64_t client_number, Logger& logger,
                     const OutputDirectory* output_dir, const UploadLimits& limits) {
  EventLoop loop;
  std::vector<char> read_buffer(kUploadReadBufferSize);
  UploadContext context{loop, logger, output_dir, limits, read_buffer};
  UploadSession session(context, std::move(socket), client_number, std::move(peer),
                        [&loop](UploadSession&) { loop.stop(); });
  bool stopping = false;
  auto begin_shutdown = [&] {
    if (std::exchange(stopping, true)) return;
    if (!session.in_flight()) {
      session.abort("shutting down");
      return;
    }
    loop.add_timer(kShutdownGrace, [&session] { session.abort("shutting down"); });
  };
  loop.on_signal(SIGINT, begin_shutdown);
  loop.on_signal(SIGTERM, begin_shutdown);
  loop.run();
  return 0;
}

}  // namespace mux
