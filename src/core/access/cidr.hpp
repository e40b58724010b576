// Address ranges for --allow / --deny. A Cidr is one IPv4 or IPv6 network ("10.0.0.0/8",
// "2001:db8::/32", or a single address); AddressFilter holds the lists a server was given and
// answers whether a peer may connect. Both families are kept as IPv6 internally (IPv4 as
// ::ffff:a.b.c.d), so an IPv4 rule also matches the same client arriving on a dual-stack socket as
// a v4-mapped IPv6 address. Pure: no I/O. Callers: the servers' admission hook, the CLI (parsing).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mux {

class Cidr {
 public:
  // "192.168.0.0/16", "::1", "fe80::/10". nullopt for anything else (host names, bad prefixes,
  // bits set below the prefix are allowed and ignored: "10.1.2.3/8" means 10.0.0.0/8).
  static std::optional<Cidr> parse(std::string_view text);

  [[nodiscard]] bool contains(const sockaddr* address) const;
  [[nodiscard]] bool contains(const std::array<std::uint8_t, 16>& address) const;
  // Normalised back to text: "10.0.0.0/8", "2001:db8::/32".
  [[nodiscard]] std::string to_string() const;

 private:
  std::array<std::uint8_t, 16> network_{};  // IPv6 form, bits below the prefix cleared
  int prefix_ = 0;                          // over the 128-bit form
  bool ipv4_ = false;                       // written as IPv4: printed back that way
};

// The IPv6 form of a socket address (IPv4 becomes v4-mapped). nullopt for other families.
std::optional<std::array<std::uint8_t, 16>> address_bytes(const sockaddr* address);

// --deny wins over --allow; with no --allow every address not denied may connect.
class AddressFilter {
 public:
  void allow(Cidr range) { allowed_.push_back(range); }
  void deny(Cidr range) { denied_.push_back(range); }
  [[nodiscard]] bool empty() const noexcept { return allowed_.empty() && denied_.empty(); }
  // "accepting only 2 ranges (--allow), refusing 1 (--deny)": for the start-up log line.
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] bool allows(const sockaddr* address) const;

 private:
  std::vector<Cidr> allowed_;
  std::vector<Cidr> denied_;
};

}  // namespace mux
