// Sizes and rates as people type and read them: "64K", "1MiB", "2.5 MiB/s".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mux {

// Parses a byte count: a whole number with an optional binary suffix K, M, G, T (also KB/KiB, any
// case; all mean powers of 1024). nullopt on anything else, or on overflow.
std::optional<std::uint64_t> parse_size(std::string_view text);

// "512 B", "1.5 KiB", "100.0 MiB"
std::string format_bytes(std::uint64_t bytes);
// "12.3 MiB/s", "1.2 GiB/s": binary, like format_bytes, so a size and a rate side by side are in
// one unit system
std::string format_rate(double bytes_per_second);
// "3 s", "1 min 05 s", "2 h 03 min"
std::string format_duration(double seconds);

}  // namespace mux
