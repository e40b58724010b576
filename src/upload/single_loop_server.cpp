#include "upload/single_loop_server.hpp"

#include "core/base/logger.hpp"

namespace mux {
namespace {

constexpr std::chrono::seconds kShutdownFinalWait{1};

}  // namespace

SingleLoopServer::SingleLoopServer(EventLoop& loop, Fd listener, Logger& logger,
                                   const OutputDirectory* output_dir, const UploadLimits& limits,
                                   const UploadAdmission& admission)
    : loop_(loop),
      logger_(logger),
      connections_(loop_, kUploadReadBufferSize),
      committer_(output_dir != nullptr ? std::optional<Committer>(std::in_place, loop_, *output_dir)
                                       : std::nullopt),
      context_{loop_,  logger,      output_dir, committer_ ? &*committer_ : nullptr,
               limits, connections_},
      max_clients_(admission.max_clients),
      // While full, connections wait in the kernel's backlog instead of being refused.
      listener_(loop_, std::move(listener), logger,
                upload_admission_policy(admission, [this] { return !at_capacity(); }),
                [this](Admitted accepted) { start_session(std::move(accepted)); }) {
  configure_for_uploads(connections_);
  connections_.stream_factory = limits.stream_factory;
  if (output_dir != nullptr) sweep_expired_partials(loop_, *output_dir, logger_);
}

void SingleLoopServer::start() {
  listener_.resume();
}

// A second signal does not cut the grace short for anyone.
void SingleLoopServer::shut_down(std::string_view /*signal_name*/, bool /*again*/) {
  begin_shutdown();
}

bool SingleLoopServer::at_capacity() const {
  return max_clients_ != 0 && sessions_.size() >= max_clients_;
}

void SingleLoopServer::start_session(Admitted accepted) {
  std::uint64_t number = next_client_number_++;
  logger_.detail("[Client {}] {} connected", number, accepted.peer);
  auto session = std::make_unique<UploadSession>(
      context_, std::move(accepted.fd), number, std::move(accepted.peer),
      [this](UploadSession& finished) { on_session_finished(finished); },
      std::move(accepted.ticket));
  UploadSession* key = session.get();
  sessions_.emplace(key, std::move(session));
}

void SingleLoopServer::on_session_finished(UploadSession& session) {
  auto it = sessions_.find(&session);
  if (it == sessions_.end()) return;
  // The session is usually inside its own handler right now: destroy it after the batch.
  loop_.retire(std::move(it->second));
  sessions_.erase(it);
  if (shutting_down_) {
    if (sessions_.empty()) loop_.stop();
  } else if (!at_capacity()) {
    listener_.resume();
  }
}

void SingleLoopServer::begin_shutdown() {
  if (shutting_down_) return;  // a second signal does not cut the grace short for anyone
  shutting_down_ = true;
  listener_.close();
  std::vector<UploadSession*> idle;
  std::size_t in_flight = 0;
  for (auto& [key, session] : sessions_) {
    if (session->in_flight()) {
      ++in_flight;
    } else {
      idle.push_back(key);
    }
  }
  logger_.info("shutting down: {} upload(s) in flight", in_flight);
  for (UploadSession* session : idle)
    session->abort("shutting down");
  if (sessions_.empty()) {
    loop_.stop();
    return;
  }
  loop_.add_timer(kShutdownGrace, [this] { end_remaining_uploads(); });
}

void SingleLoopServer::end_remaining_uploads() {
  std::vector<UploadSession*> remaining;
  remaining.reserve(sessions_.size());
  for (auto& entry : sessions_)
    remaining.push_back(entry.first);
  for (UploadSession* session : remaining)
    session->abort("shutting down");
  // Each has its ERR queued and is closing gracefully; one whose client neither reads nor
  // closes would hold the shutdown for the whole linger, so the loop stops after a short wait.
  loop_.add_timer(kShutdownFinalWait, [this] { loop_.stop(); });
}

}  // namespace mux
