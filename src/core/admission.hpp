// Admission: who may take a connection slot. The policy (global cap, per-address cap, what a
// refused client is told, the --allow/--deny predicate) is set by a server and enforced by its
// Listener; each admitted connection carries an AdmissionTicket that holds its slots and gives
// them back when destroyed (the owner keeps it as long as the client costs anything: the session,
// or in fork mode the child until it is reaped).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/byte_stream.hpp"

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
  // Connections at once from one address (IPv4, or IPv6 /128; v4-mapped counts as IPv4); 0: none.
  std::size_t max_per_address = 0;
  // At max_connections: true accepts newcomers and refuses them with a message, false leaves
  // them waiting in the kernel's backlog until a slot frees. Per-address and not-allowed
  // refusals are always accept-and-refuse: the backlog is one queue for everyone.
  bool refuse_when_full = false;
  // What a refused client is told: one line with its '\n'; empty closes without a word.
  std::function<std::string(Refusal)> refusal_message;
  // How a refused client is spoken to: null is plain TCP. A TLS server sets its factory, so the
  // refusal goes out after the handshake, inside TLS, and ends with close_notify; plaintext
  // written into a TLS socket would only read as a protocol error.
  std::function<std::unique_ptr<ByteStream>(int fd)> refusal_stream;
  // The --allow / --deny hook; null admits every address.
  std::function<bool(const sockaddr* address, socklen_t length)> allowed;
  // The owner's own gate (children running, shutting down): false leaves newcomers waiting in
  // the backlog until the owner calls Listener::resume().
  std::function<bool()> has_room;

  // No caps of the Listener's own: newcomers wait in the backlog while `has_room` says no.
  static AdmissionPolicy wait_for_room(std::function<bool()> has_room) {
    AdmissionPolicy policy;
    policy.has_room = std::move(has_room);
    return policy;
  }
};

// The counts behind one Listener's tickets; shared so tickets may outlive their Listener.
struct AdmissionCounts {
  std::size_t total = 0;
  std::unordered_map<std::string, std::size_t> per_address;  // raw address bytes -> count
  Listener* listener = nullptr;                              // told when a slot frees
};

// One admitted connection's slots. Move-only; an empty ticket holds nothing.
class AdmissionTicket {
 public:
  AdmissionTicket() = default;
  AdmissionTicket(std::shared_ptr<AdmissionCounts> counts, std::string address_key);
  AdmissionTicket(AdmissionTicket&& other) noexcept
      : counts_(std::move(other.counts_)), address_(std::exchange(other.address_, nullptr)) {}
  AdmissionTicket& operator=(AdmissionTicket&& other) noexcept;
  AdmissionTicket(const AdmissionTicket&) = delete;
  AdmissionTicket& operator=(const AdmissionTicket&) = delete;
  ~AdmissionTicket() { release(); }

  // Gives the slots back now.
  void release() noexcept;
  [[nodiscard]] bool holds() const noexcept { return counts_ != nullptr; }

 private:
  std::shared_ptr<AdmissionCounts> counts_;
  // The address's entry in counts_->per_address (unordered_map nodes never move): 8 bytes per
  // connection instead of a copy of the key.
  std::pair<const std::string, std::size_t>* address_ = nullptr;
};

// The bytes that identify a peer's address for the per-address cap.
std::string address_key(const sockaddr* address, socklen_t length);

}  // namespace mux
