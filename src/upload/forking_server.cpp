#include "upload/forking_server.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/base/logger.hpp"
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

}  // namespace

class ForkingServer::Waiting final : private Connection::Owner {
 public:
  Waiting(ForkingServer& server, Admitted client, std::uint64_t number)
      : server_(server),
        peer_(std::move(client.peer)),
        ticket_(std::move(client.ticket)),
        number_(number),
        connection_(server.waiting_context_, std::move(client.fd), *this) {
    connection_.set_peeking(true);
    // Shed for a newcomer while the server is full: it has sent nothing yet.
    ticket_.on_shed([this] { server_.on_shed(*this); });
    if (server.limits_.header_timeout.count() > 0) {
      deadline_ = server.loop_.add_timer(server.limits_.header_timeout, [this] {
        deadline_ = 0;
        server_.on_header_timeout(*this);
      });
    }
  }
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;
  ~Waiting() { server_.loop_.cancel_timer(deadline_); }

  // The socket, no longer watched here; empty once given away or closed.
  Fd take_socket() {
    server_.loop_.cancel_timer(std::exchange(deadline_, 0));
    return connection_.release_socket();
  }
  AdmissionTicket& ticket() noexcept { return ticket_; }
  [[nodiscard]] const std::string& peer() const noexcept { return peer_; }
  [[nodiscard]] std::uint64_t number() const noexcept { return number_; }

 private:
  void on_data(std::string_view) override { server_.on_first_bytes(*this); }
  void on_end_of_input() override { server_.on_gone(*this); }
  void on_closed(std::string_view) override { server_.on_gone(*this); }

  ForkingServer& server_;
  std::string peer_;
  AdmissionTicket ticket_;
  std::uint64_t number_;
  EventLoop::TimerId deadline_ = 0;
  Connection connection_;
};

ForkingServer::ForkingServer(EventLoop& loop, Fd listener, Logger& logger,
                             const OutputDirectory* output_dir, const UploadLimits& limits,
                             const UploadAdmission& admission)
    : loop_(loop),
      logger_(logger),
      output_dir_(output_dir),
      limits_(limits),
      children_(loop_, logger,
                admission.max_clients != 0
                    ? static_cast<std::size_t>(admission.max_clients)
                    : ChildSupervisor::default_max_children(kBytesPerUploadChild)),
      listener_(loop_, std::move(listener), logger,
                upload_admission_policy(admission, [this] { return has_room(); }),
                [this](Admitted client) { admit(std::move(client)); }) {
  // In the parent only: a child serves one upload in a loop of its own.
  if (output_dir_ != nullptr) sweep_expired_partials(loop_, *output_dir_, logger_);
}

ForkingServer::~ForkingServer() = default;

void ForkingServer::start() {
  children_.on_reaped([this] {
    if (shutting_down_) {
      if (children_.count() == 0) loop_.stop();
    } else if (has_room()) {
      listener_.resume();
    }
  });
  logger_.detail("at most {} upload processes at once", children_.max_children());
  header_reports_.start([this](pid_t child) {
    // A child reaped meanwhile has no ticket any more: nothing to do.
    if (AdmissionTicket* ticket = children_.ticket_of(child)) ticket->authenticated();
  });
  listener_.resume();
}

// A second signal changes nothing: the children already have theirs.
void ForkingServer::shut_down(std::string_view /*signal_name*/, bool /*again*/) {
  begin_shutdown();
}

bool ForkingServer::has_room() const {
  // Connections waiting for their first bytes count too: each may become a process.
  return !shutting_down_ && children_.count() + waiting_.size() < children_.max_children();
}

void ForkingServer::admit(Admitted client) {
  std::uint64_t number = next_client_number_++;
  logger_.detail("[Client {}] {} connected", number, client.peer);
  auto waiting = std::make_unique<Waiting>(*this, std::move(client), number);
  Waiting* key = waiting.get();
  waiting_.emplace(key, std::move(waiting));
}

void ForkingServer::drop(Waiting& waiting) {
  auto it = waiting_.find(&waiting);
  if (it == waiting_.end()) return;
  loop_.retire(std::move(it->second));
  waiting_.erase(it);
  if (!shutting_down_ && has_room()) listener_.resume();
}

void ForkingServer::on_first_bytes(Waiting& waiting) {
  spawn_child(waiting);
  drop(waiting);
}

void ForkingServer::on_gone(Waiting& waiting) {
  // Closed (or reset) before sending anything: not an upload, and not worth a process.
  logger_.detail("[Client {}] {} closed without sending anything", waiting.number(),
                 waiting.peer());
  drop(waiting);
}

void ForkingServer::on_shed(Waiting& waiting) {
  logger_.detail("[Client {}] {} shed for a newcomer: the server is full and it sent nothing",
                 waiting.number(), waiting.peer());
  drop(waiting);
}

void ForkingServer::on_header_timeout(Waiting& waiting) {
  std::string reason = header_timeout_reason(limits_);
  logger_.detail("[Client {}] {} sent nothing: {}", waiting.number(), waiting.peer(), reason);
  listener_.turn_away(waiting.take_socket(), format_err_reply(reason));
  drop(waiting);
}

void ForkingServer::spawn_child(Waiting& waiting) {
  Fd socket = waiting.take_socket();
  int socket_fd = socket.get();
  int dir_fd = output_dir_ != nullptr ? output_dir_->fd() : -1;
  std::uint64_t number = waiting.number();
  int report_fd = header_reports_.write_fd();
  try {
    pid_t pid = children_.spawn(
        {socket_fd, dir_fd, report_fd},
        [&] {
          // Logged by the child, so it comes before the child's own lines about this client.
          logger_.detail("[Client {}] served by process {}", number, ::getpid());
          return serve_one_upload(std::move(socket), waiting.peer(), number, logger_, output_dir_,
                                  limits_, report_fd);
        },
        [this](pid_t child, int status) { on_child_exit(child, status); },
        std::move(waiting.ticket()));
    // Until the child reports its header complete, the client may be shed for a newcomer while
    // the server is full: its process is killed (it has nothing to finish: no header, no file
    // but a temporary one, which on_child_exit removes).
    if (AdmissionTicket* ticket = children_.ticket_of(pid)) {
      ticket->on_shed([this, pid, number] {
        logger_.detail(
            "[Client {}] shed for a newcomer: the server is full and its header is "
            "not complete (process {} killed)",
            number, pid);
        ::kill(pid, SIGKILL);
      });
    }
  } catch (const std::system_error& error) {
    logger_.info("[Client {}] {} refused: {}", number, waiting.peer(), error.what());
    listener_.turn_away(std::move(socket), format_err_reply("server busy: cannot start a process"));
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
  listener_.close();
  // Never sent a byte: just closed.
  for (auto& entry : waiting_)
    loop_.retire(std::move(entry.second));
  waiting_.clear();
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
                     const OutputDirectory* output_dir, const UploadLimits& limits,
                     int header_report_fd) {
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
  if (header_report_fd >= 0) {
    // Lost only when the pipe is full (thousands of reports unread): then the parent merely
    // still counts this client as sheddable.
    context.on_header_complete = [header_report_fd] { ChildReports::send(header_report_fd); };
  }
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
