#include "upload/forking_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/logger.hpp"
#include "core/service_manager.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_store.hpp"

namespace mux {
namespace {

// Children get the same grace as the parent gives them, plus time to reply and exit; one still
// alive after that is hung and is killed so the server can exit.
constexpr std::chrono::seconds kChildKillDelay = kShutdownGrace + std::chrono::seconds{3};
// An idle upload child touches little beyond its code and a loop: its read buffer's pages
// become resident only as data arrives, and data is already there when it is forked.
constexpr std::size_t kBytesPerUploadChild = 2 << 20;

// One line, one non-blocking send: the socket is fresh, so its send buffer is empty, and no
// input is pending (it never became readable), so closing right after cannot cause a reset.
void send_line(int fd, const std::string& line) {
  (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

ForkingServer::ForkingServer(Fd listener, Logger& logger, const OutputDirectory* output_dir,
                             const UploadLimits& limits, const UploadAdmission& admission,
                             Hangup& hangup)
    : logger_(logger),
      hangup_(hangup),
      output_dir_(output_dir),
      limits_(limits),
      children_(loop_, logger,
                admission.max_clients != 0
                    ? static_cast<std::size_t>(admission.max_clients)
                    : ChildSupervisor::default_max_children(kBytesPerUploadChild)),
      listener_(loop_, std::move(listener), logger,
                upload_admission_policy(admission, [this] { return has_room(); }),
                [this](Admitted client) { admit(std::move(client)); }) {}

void ForkingServer::run() {
  children_.on_reaped([this] {
    if (shutting_down_) {
      if (children_.count() == 0) loop_.stop();
    } else if (has_room()) {
      listener_.resume();
    }
  });
  loop_.on_signal(SIGINT, [this] { begin_shutdown(); });
  loop_.on_signal(SIGTERM, [this] { begin_shutdown(); });
  logger_.detail("at most {} upload processes at once", children_.max_children());
  loop_.on_signal(SIGHUP, [this] {
    if (hangup_.on_hangup() == Hangup::Action::shut_down) begin_shutdown();
  });
  listener_.resume();
  loop_.run();
}

bool ForkingServer::has_room() const {
  // Connections waiting for their first bytes count too: each may become a process.
  return !shutting_down_ && children_.count() + waiting_.size() < children_.max_children();
}

void ForkingServer::admit(Admitted client) {
  std::uint64_t number = next_client_number_++;
  logger_.detail("[Client {}] {} connected", number, client.peer);
  int fd = client.fd.get();
  Waiting waiting{std::move(client), number, 0};
  if (limits_.header_timeout.count() > 0) {
    waiting.deadline =
        loop_.add_timer(limits_.header_timeout, [this, fd] { on_header_timeout(fd); });
  }
  waiting_.emplace(fd, std::move(waiting));
  loop_.watch(fd, EPOLLIN | EPOLLRDHUP, [this, fd](std::uint32_t) { on_readable(fd); });
}

std::optional<ForkingServer::Waiting> ForkingServer::take_waiting(int fd) {
  auto it = waiting_.find(fd);
  if (it == waiting_.end()) return std::nullopt;
  Waiting waiting = std::move(it->second);
  waiting_.erase(it);
  loop_.unwatch(fd);
  loop_.cancel_timer(waiting.deadline);
  return waiting;
}

void ForkingServer::on_readable(int fd) {
  std::optional<Waiting> waiting = take_waiting(fd);
  if (!waiting) return;
  char byte = 0;
  ssize_t peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (peeked <= 0) {
    // Closed (or reset) before sending anything: not an upload, and not worth a process.
    logger_.detail("[Client {}] {} closed without sending anything", waiting->number,
                   waiting->client.peer);
  } else {
    spawn_child(std::move(*waiting));
  }
  if (!shutting_down_ && has_room()) listener_.resume();
}

void ForkingServer::on_header_timeout(int fd) {
  std::optional<Waiting> waiting = take_waiting(fd);
  if (!waiting) return;
  std::string reason = header_timeout_reason(limits_);
  logger_.detail("[Client {}] {} sent nothing: {}", waiting->number, waiting->client.peer, reason);
  send_line(fd, format_err_reply(reason));
  if (!shutting_down_ && has_room()) listener_.resume();
}

void ForkingServer::spawn_child(Waiting waiting) {
  Admitted& client = waiting.client;
  int socket_fd = client.fd.get();
  int dir_fd = output_dir_ != nullptr ? output_dir_->fd() : -1;
  try {
    children_.spawn(
        {socket_fd, dir_fd},
        [&] {
          // Logged by the child, so it comes before the child's own lines about this client.
          logger_.detail("[Client {}] served by process {}", waiting.number, ::getpid());
          return serve_one_upload(std::move(client.fd), client.peer, waiting.number, logger_,
                                  output_dir_, limits_);
        },
        [this](pid_t child, int status) { on_child_exit(child, status); },
        std::move(client.ticket));
  } catch (const std::system_error& error) {
    logger_.info("[Client {}] {} refused: {}", waiting.number, client.peer, error.what());
    send_line(socket_fd, format_err_reply("server busy: cannot start a process"));
  }
  // The parent's copy of the socket closes here; the child has its own.
}

void ForkingServer::on_child_exit(pid_t pid, int status) {
  if (WIFSIGNALED(status)) {
    logger_.info("process {} was {}", pid, ChildSupervisor::describe_exit(status));
  } else {
    logger_.detail("process {} exited with status {}", pid, WEXITSTATUS(status));
  }
  remove_temporary_files_of(pid, status);
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

void ForkingServer::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  notify_stopping("shutting down");
  listener_.close();
  std::vector<int> idle;
  for (const auto& entry : waiting_)
    idle.push_back(entry.first);
  for (int fd : idle)
    take_waiting(fd);  // never sent a byte: just closed
  logger_.info("shutting down: {} upload process(es) running", children_.count());
  if (children_.count() == 0) {
    loop_.stop();
    return;
  }
  // Each child runs the same grace as the single-loop server. A child started by a terminal's
  // Ctrl-C already has its SIGINT; the extra SIGTERM changes nothing for it.
  children_.terminate_all(SIGTERM, kChildKillDelay);
}

int serve_one_upload(Fd socket, std::string peer, std::uint64_t client_number, Logger& logger,
                     const OutputDirectory* output_dir, const UploadLimits& limits) {
  // The socket keeps the parent's fd number, which is large when the parent holds many waiting
  // connections; the loop's per-fd table would grow to it. The lowest free number is tiny here.
  Fd low(::fcntl(socket.get(), F_DUPFD_CLOEXEC, 3));
  if (low) socket = std::move(low);
  EventLoop loop;
  // Not zero-filled: its pages become resident only as reads fill them.
  ConnectionContext connections(loop, kUploadReadBufferSize);
  configure_for_uploads(connections);
  std::optional<Committer> committer;
  if (output_dir != nullptr) committer.emplace(loop, *output_dir);
  UploadContext context{loop,   logger,     output_dir, committer ? &*committer : nullptr,
                        limits, connections};
  connections.stream_factory = limits.stream_factory;  // the TLS handshake runs here, in the child
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
