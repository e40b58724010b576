// Admission: who may take a connection slot. The policy (global cap, per-address cap, what a
// refused client is told, the --allow/--deny predicate) is set by a server and enforced by its
// Listener; each admitted connection carries an AdmissionTicket that holds its slots and gives
// them back when destroyed (the owner keeps it as long as the client costs anything: the session,
// or in fork mode the child until it is reaped).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/loop/byte_stream.hpp"

namespace mux {

class Listener;

enum class Refusal : std::uint8_t {
  server_full,            // the global cap (when the policy refuses instead of waiting)
  too_many_from_address,  // --max-per-address
  not_allowed,            // the allowed() predicate said no (--allow / --deny)
};
// "server full", "too many connections from this address", "address not allowed": for logs.
const char* describe(Refusal refusal) noexcept;

struct AdmissionPolicy {
  // Connections at once; 0: no cap here (the owner's has_room may still say no).
  std::size_t max_connections = 0;
  // Connections at once from one address (IPv4, or IPv6 /64; v4-mapped counts as IPv4); 0: none.
  std::size_t max_per_address = 0;
  // At max_connections: true accepts newcomers and refuses them with a message, false leaves
  // them waiting in the kernel's backlog until a slot frees. Per-address and not-allowed
  // refusals are always accept-and-refuse: the backlog is one queue for everyone.
  bool refuse_when_full = false;
  // What a refused client is told: one line with its '\n'; empty closes without a word.
  std::function<std::string(Refusal)> refusal_message;
  // How a refused client is spoken to: null is plain TCP. A TLS server sets its factory, so the
  // refusal goes out after the handshake, inside TLS, and ends with close_notify; plaintext
  // written into a TLS socket would only read as a protocol error. Refusal::not_allowed is the
  // exception: with a factory set it is closed at accept, before any TLS byte (no handshake for
  // a denied address).
  std::function<std::unique_ptr<ByteStream>(int fd)> refusal_stream;
  // The --allow / --deny hook; null admits every address.
  std::function<bool(const sockaddr* address, socklen_t length)> allowed;
  // The owner's own gate (children running, shutting down): false leaves newcomers waiting in
  // the backlog until the owner calls Listener::resume().
  std::function<bool()> has_room;
  // Connections not yet authenticated (TLS handshake, token), in total and from one address:
  // their own small budget (sshd's MaxStartups idea), so sockets that never authenticate cannot
  // take the authenticated clients' slots. Past the total, or at max_connections, the oldest
  // unauthenticated connection is shed for the newcomer; past the per-address one the newcomer
  // is refused. 0: no separate budget (every connection counts as authenticated at once).
  std::size_t max_unauthenticated = 0;
  std::size_t max_unauthenticated_per_address = 0;
  // Only a connection unauthenticated for at least this long is shed: an honest handshake ends
  // well within it, a slot holder never does. When nobody has waited that long, a newcomer past
  // the budget is still let in below max_connections (a burst of honest TLS clients, whose
  // handshakes all run at once, must not shed each other) and refused at it.
  std::chrono::milliseconds shed_after{0};
  // Upload-server's form of the budget: it applies only while the owner's has_room says no.
  // Then a newcomer is still accepted when an unauthenticated connection has waited shed_after
  // (the oldest is shed for it; one from an address holding max_unauthenticated_per_address of
  // them is refused instead), and otherwise waits in the backlog until one has. Below the cap
  // nobody is shed or refused for being unauthenticated. max_unauthenticated must be non-zero.
  bool shed_at_owner_cap = false;
  // What the log calls a connection of the budget when one is shed ("shed the oldest ... for
  // PEER"): unauthenticated for a chat-server, without a complete header for an upload-server.
  std::string pending_kind = "unauthenticated connection";

  // No caps of the Listener's own: newcomers wait in the backlog while `has_room` says no.
  static AdmissionPolicy wait_for_room(std::function<bool()> has_room) {
    AdmissionPolicy policy;
    policy.has_room = std::move(has_room);
    return policy;
  }
};

// One unauthenticated connection, in the order of its last progress (arrival, or the last
// progressed()): how its owner closes it when it is shed.
struct Unauthenticated {
  std::function<void()> shed;  // set by the owner (AdmissionTicket::on_shed); may stay empty
  std::pair<const std::string, std::size_t>* address = nullptr;  // in unauthenticated_per_address
  bool counted = true;  // false once shed or authenticated: no longer in the counts
  std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
};

// The counts behind one Listener's tickets; shared so tickets may outlive their Listener.
struct AdmissionCounts {
  std::size_t total = 0;
  std::unordered_map<std::string, std::size_t> per_address;  // raw address bytes -> count
  std::size_t unauthenticated = 0;
  std::unordered_map<std::string, std::size_t> unauthenticated_per_address;
  std::list<Unauthenticated> unauthenticated_order;  // idle longest first
  Listener* listener = nullptr;                      // told when a slot frees

  // Sheds the oldest unauthenticated connection that can be shed and arrived no later than
  // `arrived_by`: false when there is none.
  bool shed_oldest_unauthenticated(std::chrono::steady_clock::time_point arrived_by);
  // When the oldest unauthenticated connection that can be shed arrived; nullopt when none can.
  [[nodiscard]] std::optional<std::chrono::steady_clock::time_point> oldest_sheddable() const;
};

// One admitted connection's slots. Move-only; an empty ticket holds nothing.
class AdmissionTicket {
 public:
  AdmissionTicket() = default;
  // `unauthenticated`: also counts against the unauthenticated budget until authenticated().
  AdmissionTicket(std::shared_ptr<AdmissionCounts> counts, std::string address_key,
                  bool unauthenticated = false);
  AdmissionTicket(AdmissionTicket&& other) noexcept
      : counts_(std::move(other.counts_)),
        address_(std::exchange(other.address_, nullptr)),
        pending_(std::exchange(other.pending_, {})),
        has_pending_(std::exchange(other.has_pending_, false)) {}
  AdmissionTicket& operator=(AdmissionTicket&& other) noexcept;
  AdmissionTicket(const AdmissionTicket&) = delete;
  AdmissionTicket& operator=(const AdmissionTicket&) = delete;
  ~AdmissionTicket() { release(); }

  // Gives the slots back now.
  void release() noexcept;
  // The connection is through its handshake and token: it leaves the unauthenticated budget.
  void authenticated() noexcept;
  // How to close this connection if it is shed while still unauthenticated.
  void on_shed(std::function<void()> shed);
  // It is getting somewhere (bytes of an upload header arrived): it goes to the back of the
  // shedding order, so connections that sent nothing for longest are shed first, and a slow
  // but moving one only after it stalled for shed_after itself.
  void progressed() noexcept;
  [[nodiscard]] bool holds() const noexcept { return counts_ != nullptr; }

 private:
  std::shared_ptr<AdmissionCounts> counts_;
  // The address's entry in counts_->per_address (unordered_map nodes never move): 8 bytes per
  // connection instead of a copy of the key.
  std::pair<const std::string, std::size_t>* address_ = nullptr;
  std::list<Unauthenticated>::iterator pending_{};  // valid while has_pending_
  bool has_pending_ = false;
};

// The bytes that identify a peer's address for the per-address cap.
std::string address_key(const sockaddr* address, socklen_t length);

}  // namespace mux
