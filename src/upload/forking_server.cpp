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
// What a parent's session reads at once: a header line and what came with it. Whatever it read
// is copied for the child (the rest of the body the child reads itself).
constexpr std::size_t kPreHeaderReadBytes = 64 * 1024;
// Once the last child is gone at shutdown, connections still closing (an ERR shutting down being
// read) get this long before the loop stops.
constexpr std::chrono::seconds kShutdownFinalWait{1};

}  // namespace

ForkingServer::ForkingServer(EventLoop& loop, Fd listener, Logger& logger,
                             const OutputDirectory* output_dir, const UploadLimits& limits,
                             const UploadAdmission& admission)
    : loop_(loop),
      logger_(logger),
      output_dir_(output_dir),
      limits_(limits),
      connections_(loop_, kPreHeaderReadBytes),
      // No output directory here: nothing is stored before the header is complete, and after it
      // a child stores.
      context_{loop_, logger, nullptr, nullptr, limits, connections_},
      children_(loop_, logger,
                admission.max_clients != 0
                    ? static_cast<std::size_t>(admission.max_clients)
                    : ChildSupervisor::default_max_children(kBytesPerUploadChild)),
      listener_(loop_, std::move(listener), logger,
                upload_admission_policy(admission, [this] { return has_room(); }),
                [this](Admitted client) { admit(std::move(client)); }) {
  configure_for_uploads(connections_);
  connections_.stream_factory = limits.stream_factory;
  context_.hand_off = [this](UploadSession& session) { return spawn_child(session); };
  // In the parent only: a child serves one upload in a loop of its own.
  if (output_dir_ != nullptr) sweep_expired_partials(loop_, *output_dir_, logger_);
}

ForkingServer::~ForkingServer() {
  loop_.cancel_timer(final_wait_);
}

void ForkingServer::start() {
  children_.on_reaped([this] {
    if (shutting_down_) {
      stop_when_done();
    } else if (has_room()) {
      listener_.resume();
    }
  });
  logger_.detail("at most {} upload processes at once", children_.max_children());
  listener_.resume();
}

// A second signal changes nothing: the children already have theirs.
void ForkingServer::shut_down(std::string_view /*signal_name*/, bool /*again*/) {
  begin_shutdown();
}

bool ForkingServer::has_room() const {
  // Connections still reading their header count too: each may become a process.
  return !shutting_down_ && children_.count() + sessions_.size() < children_.max_children();
}

void ForkingServer::admit(Admitted client) {
  std::uint64_t number = next_client_number_++;
  logger_.detail("[Client {}] {} connected", number, client.peer);
  auto session = std::make_unique<UploadSession>(
      context_, std::move(client.fd), number, std::move(client.peer),
      [this](UploadSession& finished) { on_session_finished(finished); }, std::move(client.ticket));
  UploadSession* key = session.get();
  sessions_.emplace(key, std::move(session));
}

void ForkingServer::on_session_finished(UploadSession& session) {
  auto it = sessions_.find(&session);
  if (it == sessions_.end()) return;
  // Inside its own handler right now: destroyed after the batch.
  loop_.retire(std::move(it->second));
  sessions_.erase(it);
  if (shutting_down_) {
    stop_when_done();
  } else if (has_room()) {
    listener_.resume();
  }
}

bool ForkingServer::spawn_child(UploadSession& session) {
  int dir_fd = output_dir_ != nullptr ? output_dir_->fd() : -1;
  std::uint64_t number = session.client_number();
  pid_t pid = 0;
  try {
    pid = children_.spawn(
        {session.socket_fd(), dir_fd},
        [&] {
          // Logged by the child, so it comes before the child's own lines about this client.
          logger_.detail("[Client {}] served by process {}", number, ::getpid());
          return serve_handed_upload(session.take_in_child(), session.peer(), number, logger_,
                                     output_dir_, limits_);
        },
        [this](pid_t child, int status) { on_child_exit(child, status); });
  } catch (const std::system_error& error) {
    logger_.info("[Client {}] {} refused: {}", number, session.peer(), error.what());
    return false;
  }
  // The client's slot is the child's until it is reaped; its header is complete, so it is never
  // shed.
  if (AdmissionTicket* ticket = children_.ticket_of(pid)) *ticket = session.take_ticket();
  return true;
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
  logger_.info("shutting down: {} upload process(es) running", children_.count());
  // Before their header: a partial header reads ERR shutting down, a silent socket is closed.
  std::vector<UploadSession*> waiting;
  waiting.reserve(sessions_.size());
  for (auto& entry : sessions_)
    waiting.push_back(entry.first);
  for (UploadSession* session : waiting)
    session->abort("shutting down");
  // Each child runs the same grace as the single-loop server. A child started by a terminal's
  // Ctrl-C already has its SIGINT; the extra SIGTERM changes nothing for it.
  if (children_.count() != 0) children_.terminate_all(SIGTERM, kChildKillDelay);
  stop_when_done();
}

void ForkingServer::stop_when_done() {
  if (children_.count() != 0) return;
  if (sessions_.empty()) {
    loop_.stop();
    return;
  }
  // Connections still closing (each bounded by its drain and linger) do not hold the exit long.
  if (final_wait_ == 0) {
    final_wait_ = loop_.add_timer(kShutdownFinalWait, [this] {
      final_wait_ = 0;
      loop_.stop();
    });
  }
}

int serve_handed_upload(UploadSession::HandedOver handed, std::string peer,
                        std::uint64_t client_number, Logger& logger,
                        const OutputDirectory* output_dir, const UploadLimits& limits) {
  // The socket keeps the parent's fd number, which is large when the parent holds many
  // connections; the loop's per-fd table would grow to it. The lowest free number is tiny here.
  if (Fd low(::fcntl(handed.socket.get(), F_DUPFD_CLOEXEC, 3)); low) {
    handed.stream->renumber(low.get());
    handed.socket = std::move(low);
  }
  EventLoop loop;
  // Not zero-filled: its pages become resident only as reads fill them.
  ConnectionContext connections(loop, kUploadReadBufferSize);
  configure_for_uploads(connections);
  std::optional<Committer> committer;
  if (output_dir != nullptr) committer.emplace(loop, *output_dir);
  UploadContext context{loop,   logger,     output_dir, committer ? &*committer : nullptr,
                        limits, connections};
  // The stream goes on as it is: the handshake was the parent's.
  UploadSession session(
      context, std::move(handed.socket), client_number, std::move(peer),
      [&loop](UploadSession&) { loop.stop(); }, {}, std::move(handed.stream));
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
  // Only now that a signal is the loop's: the header's log line may tell a test (or a person) to
  // signal this process, and a SIGTERM that came earlier would end it without a reply.
  session.replay(handed.read, handed.ended);
  loop.run();
  return 0;
}

}  // namespace mux
