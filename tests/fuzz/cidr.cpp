// --allow / --deny ranges: Cidr::parse against a reference reading of the same text (the address
// by inet_pton, the prefix as 1 to 3 decimal digits within the family's range), the normalised
// text reparsed to the same range, and containment against a bit-by-bit reference on addresses
// taken from the input. Every byte of a --allow value comes from a person or a script.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "core/access/cidr.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::cidr {
namespace {

using Bytes = std::array<std::uint8_t, 16>;

struct Range {
  Bytes network{};  // IPv6 form (IPv4 as ::ffff:a.b.c.d), not masked
  int prefix = 0;   // over the 128-bit form
};

std::optional<Range> reference_parse(std::string_view text) {
  std::string_view address = text;
  std::optional<int> bits;
  if (std::size_t slash = text.find('/'); slash != std::string_view::npos) {
    address = text.substr(0, slash);
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    int value = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + (c - '0');
    }
    bits = value;
  }
  std::string terminated(address);
  if (terminated.find('\0') != std::string::npos) return std::nullopt;
  Range range;
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, terminated.c_str(), &v4) == 1) {
    if (bits.value_or(32) > 32) return std::nullopt;
    range.network[10] = range.network[11] = 0xff;
    std::memcpy(range.network.data() + 12, &v4, 4);
    range.prefix = 96 + bits.value_or(32);
  } else if (::inet_pton(AF_INET6, terminated.c_str(), &v6) == 1) {
    if (bits.value_or(128) > 128) return std::nullopt;
    std::memcpy(range.network.data(), &v6, 16);
    range.prefix = bits.value_or(128);
  } else {
    return std::nullopt;
  }
  return range;
}

bool bit(const Bytes& bytes, int index) {
  return (bytes[static_cast<std::size_t>(index / 8)] >> (7 - index % 8)) & 1;
}

bool reference_contains(const Range& range, const Bytes& address) {
  for (int i = 0; i < range.prefix; ++i)
    if (bit(range.network, i) != bit(address, i)) return false;
  return true;
}

std::string hex(const Bytes& bytes) {
  std::string text;
  for (std::uint8_t byte : bytes)
    text += fmt::format("{:02x}", byte);
  return text;
}

}  // namespace

// The first 16 bytes are an address to test containment with (its first byte also chooses
// whether it is used as IPv4, the last 4 bytes then); the rest is the --allow text.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  Bytes probe{};
  for (std::uint8_t& byte : probe)
    byte = input.take_byte();
  if (probe[0] & 1) {  // as an IPv4 peer arriving on an IPv4 socket: the v4-mapped form
    std::memset(probe.data(), 0, 10);
    probe[10] = probe[11] = 0xff;
  }
  std::string_view text = input.take_rest();
  std::optional<Cidr> parsed = Cidr::parse(text);
  std::optional<Range> expected = reference_parse(text);
  FUZZ_CHECK(parsed.has_value() == expected.has_value(),
             fmt::format("\"{}\": parse {} but the reference {}", printable(text),
                         parsed ? "accepts" : "refuses", expected ? "accepts" : "refuses"));
  if (!parsed) return;

  std::string normal = parsed->to_string();
  std::optional<Cidr> again = Cidr::parse(normal);
  FUZZ_CHECK(again.has_value(), fmt::format("\"{}\" normalised to \"{}\", which does not parse",
                                            printable(text), normal));
  FUZZ_CHECK(again->to_string() == normal,
             fmt::format("\"{}\" reparsed as \"{}\"", normal, again->to_string()));

  for (const Bytes& address : {probe, expected->network}) {
    bool contains = parsed->contains(address);
    FUZZ_CHECK(contains == reference_contains(*expected, address),
               fmt::format("\"{}\" (prefix {}) contains {}: says {}", printable(text),
                           expected->prefix, hex(address), contains));
    FUZZ_CHECK(again->contains(address) == contains,
               fmt::format("\"{}\" and its normal form \"{}\" disagree on {}", printable(text),
                           normal, hex(address)));
  }

  // The same answers through the socket-address path the servers use.
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  std::memcpy(&v6.sin6_addr, probe.data(), 16);
  FUZZ_CHECK(parsed->contains(reinterpret_cast<const sockaddr*>(&v6)) == parsed->contains(probe),
             "sockaddr_in6 path disagrees");
  if (probe[0] & 1) {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    std::memcpy(&v4.sin_addr, probe.data() + 12, 4);
    FUZZ_CHECK(parsed->contains(reinterpret_cast<const sockaddr*>(&v4)) == parsed->contains(probe),
               "sockaddr_in path disagrees");
  }
}

}  // namespace mux::fuzz::cidr
