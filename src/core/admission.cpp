#include "core/admission.hpp"

#include <netinet/in.h>

#include <cstring>

#include "core/listener.hpp"

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
    return std::string(reinterpret_cast<const char*>(&v6->sin6_addr), sizeof v6->sin6_addr);
  }
  return std::string(1, static_cast<char>(address->sa_family));  // unix sockets: one bucket
}

AdmissionTicket::AdmissionTicket(std::shared_ptr<AdmissionCounts> counts, std::string address_key)
    : counts_(std::move(counts)) {
  ++counts_->total;
  auto [entry, added] = counts_->per_address.try_emplace(std::move(address_key), 0);
  ++entry->second;
  address_ = &*entry;
}

AdmissionTicket& AdmissionTicket::operator=(AdmissionTicket&& other) noexcept {
  if (this != &other) {
    release();
    counts_ = std::move(other.counts_);
    address_ = std::exchange(other.address_, nullptr);
  }
  return *this;
}

void AdmissionTicket::release() noexcept {
  if (!counts_) return;
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
