#include "core/loop/listener.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "core/base/logger.hpp"

namespace mux {
namespace {

constexpr std::chrono::seconds kTripLogInterval{1};
constexpr std::chrono::seconds kRefusalHandshakeTimeout{3};

}  // namespace

// A refused client: told the policy's message, then closed gracefully. Owned by the Listener.
class Listener::RefusedClient final : private Connection::Owner {
 public:
  RefusedClient(Listener& listener, Fd socket, const std::string& message)
      : listener_(listener), connection_(listener.refusal_context_, std::move(socket), *this) {
    if (!message.empty()) connection_.send(message);  // TLS: written once the handshake is done
    if (connection_.ready()) connection_.close_gracefully();
  }

 private:
  void on_ready() override { connection_.close_gracefully(); }
  void on_data(std::string_view) override {}
  void on_end_of_input() override {}
  void on_closed(std::string_view) override { listener_.forget_refused(*this); }

  Listener& listener_;
  Connection connection_;
};

void notify_slot_freed(Listener& listener) {
  listener.on_slot_freed();
}

Listener::Listener(EventLoop& loop, Fd listening_socket, Logger& logger, AdmissionPolicy policy,
                   OnConnection on_connection)
    : loop_(loop),
      logger_(logger),
      acceptor_(std::move(listening_socket)),
      policy_(std::move(policy)),
      on_connection_(std::move(on_connection)),
      counts_(std::make_shared<AdmissionCounts>()),
      refusal_context_(loop, 4096) {
  counts_->listener = this;
  refusal_context_.reads_per_wakeup = 4;
  refusal_context_.stream_factory = policy_.refusal_stream;
  // A refused TLS client gets a short handshake: it is only there to be told why it is refused.
  refusal_context_.handshake_timeout = kRefusalHandshakeTimeout;
}

Listener::~Listener() {
  counts_->listener = nullptr;
  loop_.cancel_timer(shed_timer_);
  for (TripLog& log : trips_)
    loop_.cancel_timer(log.summary_timer);
  set_watching(false);
}

void Listener::resume() {
  if (!closed_) set_watching(true);
}

void Listener::close() {
  loop_.cancel_timer(std::exchange(shed_timer_, 0));
  set_watching(false);
  acceptor_.close();
  closed_ = true;
}

void Listener::set_watching(bool on) {
  if (on == watching_ || (on && acceptor_.fd() < 0)) return;
  watching_ = on;
  if (on) {
    loop_.watch(acceptor_.fd(), EPOLLIN, [this](std::uint32_t) { accept_pending(); });
  } else {
    loop_.unwatch(acceptor_.fd());
  }
}

bool Listener::owner_has_room() const {
  return !policy_.has_room || policy_.has_room();
}

bool Listener::at_global_cap() const {
  return policy_.max_connections != 0 && counts_->total >= policy_.max_connections;
}

void Listener::on_slot_freed() {
  // A slot freed while newcomers wait in the backlog: take them again (resume is idempotent).
  if (!watching_ && !closed_ && owner_has_room() && !at_global_cap()) set_watching(true);
}

bool Listener::can_shed_now() const {
  if (!policy_.shed_at_owner_cap) return false;
  std::optional<std::chrono::steady_clock::time_point> oldest = counts_->oldest_sheddable();
  return oldest && *oldest <= std::chrono::steady_clock::now() - policy_.shed_after;
}

void Listener::arm_shed_timer() {
  loop_.cancel_timer(std::exchange(shed_timer_, 0));
  if (!policy_.shed_at_owner_cap || closed_) return;
  std::optional<std::chrono::steady_clock::time_point> oldest = counts_->oldest_sheddable();
  if (!oldest) return;  // a newcomer waits for a slot to free instead
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(*oldest + policy_.shed_after -
                                                           std::chrono::steady_clock::now());
  // Watching again only looks: a newcomer in the backlog is accepted (and sheds), none costs
  // nothing.
  shed_timer_ = loop_.add_timer(std::max(wait, std::chrono::milliseconds{1}), [this] {
    shed_timer_ = 0;
    if (!closed_) set_watching(true);
  });
}

void Listener::accept_pending() {
  for (int i = 0; i < kAcceptsPerWakeup; ++i) {
    bool owner_full = !owner_has_room();
    if ((owner_full || (at_global_cap() && !policy_.refuse_when_full)) &&
        !(owner_full && can_shed_now())) {
      if (at_global_cap())
        trip(kWaiting, fmt::format("at the limit of {} clients: newcomers wait in the backlog",
                                   policy_.max_connections));
      set_watching(false);
      // At the owner's cap, a connection still unauthenticated when its shed_after is over
      // makes room: look at the backlog again then.
      if (owner_full) arm_shed_timer();
      return;
    }
    bool dropped = false;
    std::optional<Acceptor::Accepted> accepted = acceptor_.accept(dropped);
    if (dropped) trip(kOutOfFds, "refused a connection: out of file descriptors");
    if (!accepted) return;
    admit(std::move(*accepted));
    if (closed_) return;  // the owner shut down while handling it
  }
}

void Listener::admit(Acceptor::Accepted accepted) {
  const sockaddr* address = accepted.address.get();
  if (policy_.allowed && !policy_.allowed(address, accepted.address.length))
    return refuse(std::move(accepted), Refusal::not_allowed);
  bool budget = policy_.max_unauthenticated != 0;
  if (at_global_cap() && !budget) return refuse(std::move(accepted), Refusal::server_full);
  // shed_at_owner_cap: the budget holds only while the owner is full.
  bool owner_full = policy_.shed_at_owner_cap && !owner_has_room();
  bool full = at_global_cap() || owner_full;
  std::string key = address_key(address, accepted.address.length);
  if (budget && policy_.max_unauthenticated_per_address != 0 &&
      (!policy_.shed_at_owner_cap || owner_full)) {
    auto it = counts_->unauthenticated_per_address.find(key);
    if (it != counts_->unauthenticated_per_address.end() &&
        it->second >= policy_.max_unauthenticated_per_address)
      return refuse(std::move(accepted), Refusal::too_many_from_address);
  }
  if (policy_.max_per_address != 0) {
    auto it = counts_->per_address.find(key);
    if (it != counts_->per_address.end() && it->second >= policy_.max_per_address)
      return refuse(std::move(accepted), Refusal::too_many_from_address);
  }
  // Full, or the unauthenticated budget spent: the oldest connection still not authenticated
  // after shed_after makes room (an honest client authenticates in moments, a slot holder
  // never does). Nobody that old: below the cap the newcomer comes in over the budget (an
  // honest burst of handshakes), at the cap it is refused.
  if (budget && (full || counts_->unauthenticated >= policy_.max_unauthenticated)) {
    if (counts_->shed_oldest_unauthenticated(std::chrono::steady_clock::now() -
                                             policy_.shed_after)) {
      trip(kShed, fmt::format("shed the oldest {} for {}", policy_.pending_kind, accepted.peer));
    } else if (full) {
      return refuse(std::move(accepted), Refusal::server_full);
    }
  }
  AdmissionTicket ticket(counts_, std::move(key), budget);
  on_connection_(Admitted{std::move(accepted.fd), std::move(accepted.peer), accepted.address,
                          std::move(ticket)});
}

void Listener::refuse(Acceptor::Accepted accepted, Refusal refusal) {
  switch (refusal) {
    case Refusal::server_full:
      trip(kFull,
           fmt::format("refused {}: server full ({} clients)", accepted.peer, counts_->total));
      break;
    case Refusal::too_many_from_address:
      trip(kPerAddress, fmt::format("refused {}: too many connections from this address ({})",
                                    accepted.peer, policy_.max_per_address));
      break;
    case Refusal::not_allowed:
      trip(kNotAllowed, fmt::format("refused {}: address not allowed", accepted.peer));
      // On a TLS port the reason could only be told after a handshake: a certificate sent and
      // a key exchange computed for an address we refuse. It is closed here, before any TLS
      // byte, with nothing written (issue 21, A10); the fd closes as `accepted` goes.
      if (policy_.refusal_stream) return;
      break;
  }
  say_and_close(std::move(accepted.fd),
                policy_.refusal_message ? policy_.refusal_message(refusal) : std::string());
}

void Listener::turn_away(Fd socket, const std::string& message) {
  say_and_close(std::move(socket), message);
}

void Listener::say_and_close(Fd socket, const std::string& message) {
  // Past the bound the message gets one try and the socket closes at once (a client still
  // sending may then see a reset instead): a refusal flood holds no fds or memory of its own.
  if (refused_.size() >= kMaxRefusing) {
    // Over TLS there is no one-try message: the handshake would have to be waited for.
    if (!message.empty() && !policy_.refusal_stream)
      (void)::send(socket.get(), message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    return;
  }
  auto client = std::make_unique<RefusedClient>(*this, std::move(socket), message);
  RefusedClient* key = client.get();
  refused_.emplace(key, std::move(client));
}

void Listener::forget_refused(RefusedClient& client) {
  auto it = refused_.find(&client);
  if (it == refused_.end()) return;
  loop_.retire(std::move(it->second));
  refused_.erase(it);
}

void Listener::trip(Trip kind, const std::string& line) {
  TripLog& log = trips_[kind];
  auto now = EventLoop::Clock::now();
  if (log.last == EventLoop::Clock::time_point{} || now - log.last >= kTripLogInterval) {
    log.last = now;
    logger_.info("{}", line);
    return;
  }
  // Within the quiet period: count it, and say how many once the period is over.
  if (log.swallowed++ == 0) {
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(kTripLogInterval - (now - log.last));
    log.summary_timer = loop_.add_timer(wait, [this, kind] {
      TripLog& pending = trips_[kind];
      pending.summary_timer = 0;
      pending.last = EventLoop::Clock::now();
      logger_.info("... and {} more like it in the last second",
                   std::exchange(pending.swallowed, 0));
    });
  }
}

}  // namespace mux
