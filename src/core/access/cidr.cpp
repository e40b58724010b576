#include "core/access/cidr.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace mux {
namespace {

constexpr std::array<std::uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::array<std::uint8_t, 16> mapped(const in_addr& v4) {
  std::array<std::uint8_t, 16> bytes{};
  std::copy(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), bytes.begin());
  std::memcpy(bytes.data() + 12, &v4, 4);
  return bytes;
}

bool is_v4_mapped(const std::array<std::uint8_t, 16>& bytes) {
  return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), bytes.begin());
}

void clear_below(std::array<std::uint8_t, 16>& bytes, int prefix) {
  for (int bit = prefix; bit < 128; ++bit)
    bytes[static_cast<std::size_t>(bit / 8)] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
}

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text) {
  std::string_view address_text = text;
  std::optional<int> prefix;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    address_text = text.substr(0, slash);
    std::string_view digits = text.substr(slash + 1);
    // 1 to 3 decimal digits: from_chars alone would also take "-0".
    if (digits.empty() || digits.size() > 3 ||
        digits.find_first_not_of("0123456789") != std::string_view::npos)
      return std::nullopt;
    int value = -1;
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    prefix = value;
  }
  // inet_pton reads a C string: a NUL inside would end the address early and pass the rest.
  if (address_text.find('\0') != std::string_view::npos) return std::nullopt;
  std::string address(address_text);
  Cidr cidr;
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    int bits = prefix.value_or(32);
    if (bits < 0 || bits > 32) return std::nullopt;
    cidr.network_ = mapped(v4);
    cidr.prefix_ = 96 + bits;
    cidr.ipv4_ = true;
  } else if (::inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    int bits = prefix.value_or(128);
    if (bits < 0 || bits > 128) return std::nullopt;
    std::memcpy(cidr.network_.data(), &v6, 16);
    cidr.prefix_ = bits;
  } else {
    return std::nullopt;
  }
  clear_below(cidr.network_, cidr.prefix_);
  return cidr;
}

bool Cidr::contains(const std::array<std::uint8_t, 16>& address) const {
  std::array<std::uint8_t, 16> masked = address;
  clear_below(masked, prefix_);
  return masked == network_;
}

bool Cidr::contains(const sockaddr* address) const {
  auto bytes = address_bytes(address);
  return bytes && contains(*bytes);
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (ipv4_ && is_v4_mapped(network_)) {
    ::inet_ntop(AF_INET, network_.data() + 12, text, sizeof text);
    return std::string(text) + "/" + std::to_string(prefix_ - 96);
  }
  ::inet_ntop(AF_INET6, network_.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix_);
}

std::optional<std::array<std::uint8_t, 16>> address_bytes(const sockaddr* address) {
  if (address == nullptr) return std::nullopt;
  if (address->sa_family == AF_INET) {
    sockaddr_in v4{};
    std::memcpy(&v4, address, sizeof v4);
    return mapped(v4.sin_addr);
  }
  if (address->sa_family == AF_INET6) {
    sockaddr_in6 v6{};
    std::memcpy(&v6, address, sizeof v6);
    std::array<std::uint8_t, 16> bytes{};
    std::memcpy(bytes.data(), &v6.sin6_addr, 16);
    return bytes;
  }
  return std::nullopt;
}

bool AddressFilter::allows(const sockaddr* address) const {
  if (empty()) return true;
  auto bytes = address_bytes(address);
  if (!bytes)
    return false;  // not an IP peer: a filter was asked for, so refuse what it cannot judge
  auto matches = [&](const Cidr& range) { return range.contains(*bytes); };
  if (std::any_of(denied_.begin(), denied_.end(), matches)) return false;
  return allowed_.empty() || std::any_of(allowed_.begin(), allowed_.end(), matches);
}

std::string AddressFilter::describe() const {
  std::string text;
  if (!allowed_.empty()) {
    text = fmt::format("accepting only {} range{} (--allow)", allowed_.size(),
                       allowed_.size() == 1 ? "" : "s");
  }
  if (!denied_.empty()) {
    text += fmt::format("{}refusing {} range{} (--deny)", text.empty() ? "" : ", ", denied_.size(),
                        denied_.size() == 1 ? "" : "s");
  }
  return text;
}

}  // namespace mux
