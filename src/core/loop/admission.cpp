#include "core/loop/admission.hpp"

#include <netinet/in.h>

#include <cstring>

#include "core/loop/listener.hpp"

namespace mux {

const char* describe(Refusal refusal) noexcept {
  switch (refusal) {
    case Refusal::server_full:
      return "server full";
    case Refusal::too_many_from_address:
      return "too many connections from this address";
    case Refusal::not_allowed:
      return "address not allowed";
  }
  return "refused";
}

std::string address_key(const sockaddr* address, socklen_t length) {
  if (address->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    return std::string(reinterpret_cast<const char*>(&v4->sin_addr), sizeof v4->sin_addr);
  }
  if (address->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    // A v4-mapped address (a dual-stack listener) is the same machine as its IPv4 form.
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr))
      return std::string(reinterpret_cast<const char*>(&v6->sin6_addr) + 12, 4);
    // One IPv6 host is routinely given a whole /64 (SLAAC, privacy addresses): counted by it,
    // not by each of its 2^64 addresses.
    return std::string(reinterpret_cast<const char*>(&v6->sin6_addr), 8);
  }
  return std::string(1, static_cast<char>(address->sa_family));  // unix sockets: one bucket
}

namespace {

// Takes `pending` out of the unauthenticated counts (once).
void uncount(AdmissionCounts& counts, Unauthenticated& pending) noexcept {
  if (!pending.counted) return;
  pending.counted = false;
  --counts.unauthenticated;
  if (pending.address != nullptr && --pending.address->second == 0)
    counts.unauthenticated_per_address.erase(
        counts.unauthenticated_per_address.find(pending.address->first));
  pending.address = nullptr;
}

}  // namespace

bool AdmissionCounts::shed_oldest_unauthenticated(
    std::chrono::steady_clock::time_point arrived_by) {
  for (Unauthenticated& pending : unauthenticated_order) {
    if (pending.since > arrived_by) return false;  // oldest first: the rest came later still
    if (!pending.counted || !pending.shed) continue;
    uncount(*this, pending);
    // The owner closes it (its ticket, and so this entry, goes later).
    std::function<void()> shed = std::exchange(pending.shed, {});
    shed();
    return true;
  }
  return false;
}

std::optional<std::chrono::steady_clock::time_point> AdmissionCounts::oldest_sheddable() const {
  for (const Unauthenticated& pending : unauthenticated_order) {
    if (pending.counted && pending.shed) return pending.since;
  }
  return std::nullopt;
}

AdmissionTicket::AdmissionTicket(std::shared_ptr<AdmissionCounts> counts, std::string address_key,
                                 bool unauthenticated)
    : counts_(std::move(counts)) {
  ++counts_->total;
  if (unauthenticated) {
    auto [entry, added] = counts_->unauthenticated_per_address.try_emplace(address_key, 0);
    ++entry->second;
    ++counts_->unauthenticated;
    pending_ = counts_->unauthenticated_order.insert(
        counts_->unauthenticated_order.end(),
        Unauthenticated{{}, &*entry, true, std::chrono::steady_clock::now()});
    has_pending_ = true;
  }
  auto [entry, added] = counts_->per_address.try_emplace(std::move(address_key), 0);
  ++entry->second;
  address_ = &*entry;
}

void AdmissionTicket::authenticated() noexcept {
  if (!counts_ || !has_pending_) return;
  uncount(*counts_, *pending_);
  counts_->unauthenticated_order.erase(pending_);
  has_pending_ = false;
}

void AdmissionTicket::progressed() noexcept {
  if (!counts_ || !has_pending_ || !pending_->counted) return;
  pending_->since = std::chrono::steady_clock::now();
  // splice keeps pending_ valid: the node moves, it is not copied.
  auto& order = counts_->unauthenticated_order;
  order.splice(order.end(), order, pending_);
}

void AdmissionTicket::on_shed(std::function<void()> shed) {
  if (counts_ && has_pending_ && pending_->counted) pending_->shed = std::move(shed);
}

AdmissionTicket& AdmissionTicket::operator=(AdmissionTicket&& other) noexcept {
  if (this != &other) {
    release();
    counts_ = std::move(other.counts_);
    address_ = std::exchange(other.address_, nullptr);
    pending_ = std::exchange(other.pending_, {});
    has_pending_ = std::exchange(other.has_pending_, false);
  }
  return *this;
}

void AdmissionTicket::release() noexcept {
  if (!counts_) return;
  authenticated();  // leaves the unauthenticated budget (and its order) too
  std::shared_ptr<AdmissionCounts> counts = std::move(counts_);
  counts_ = nullptr;
  --counts->total;
  // Erased by iterator: the key passed to erase(key) would live inside the node being freed.
  if (address_ != nullptr && --address_->second == 0)
    counts->per_address.erase(counts->per_address.find(address_->first));
  address_ = nullptr;
  if (counts->listener != nullptr) notify_slot_freed(*counts->listener);
}

}  // namespace mux
