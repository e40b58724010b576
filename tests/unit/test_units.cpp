// parse_size and the human-readable formatters: the strings people type and read.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>

#include "core/base/units.hpp"

using mux::format_bytes;
using mux::format_duration;
using mux::format_rate;
using mux::parse_size;

TEST_CASE("parse_size: plain numbers") {
  CHECK(parse_size("0") == std::optional<std::uint64_t>(0));
  CHECK(parse_size("4096") == std::optional<std::uint64_t>(4096));
  CHECK(parse_size("007") == std::optional<std::uint64_t>(7));
  CHECK(parse_size("12b") == std::optional<std::uint64_t>(12));
  CHECK(parse_size("12B") == std::optional<std::uint64_t>(12));
  CHECK(parse_size("18446744073709551615") == std::optional<std::uint64_t>(UINT64_MAX));
}

TEST_CASE("parse_size: binary suffixes in any case, with B or iB") {
  CHECK(parse_size("1K") == std::optional<std::uint64_t>(1024));
  CHECK(parse_size("1k") == std::optional<std::uint64_t>(1024));
  CHECK(parse_size("64KB") == std::optional<std::uint64_t>(65536));
  CHECK(parse_size("64kib") == std::optional<std::uint64_t>(65536));
  CHECK(parse_size("2M") == std::optional<std::uint64_t>(2097152));
  CHECK(parse_size("1MiB") == std::optional<std::uint64_t>(1048576));
  CHECK(parse_size("3mB") == std::optional<std::uint64_t>(3145728));
  CHECK(parse_size("1G") == std::optional<std::uint64_t>(1073741824));
  CHECK(parse_size("5GiB") == std::optional<std::uint64_t>(5368709120));
  CHECK(parse_size("1T") == std::optional<std::uint64_t>(1099511627776));
  CHECK(parse_size("2tib") == std::optional<std::uint64_t>(2199023255552));
}

TEST_CASE("parse_size: overflow is rejected, not wrapped") {
  CHECK(parse_size("18446744073709551616") == std::nullopt);   // UINT64_MAX + 1
  CHECK(parse_size("99999999999999999999") == std::nullopt);   // 20 digits, too big
  CHECK(parse_size("123456789012345678901") == std::nullopt);  // 21 digits
  CHECK(parse_size("16777215T") == std::optional<std::uint64_t>(18446742974197923840u));
  CHECK(parse_size("16777216T") == std::nullopt);     // 2^24 * 2^40 = 2^64
  CHECK(parse_size("17179869184G") == std::nullopt);  // 2^34 * 2^30 = 2^64
}

TEST_CASE("parse_size: garbage and empty input") {
  CHECK(parse_size("") == std::nullopt);
  CHECK(parse_size("K") == std::nullopt);
  CHECK(parse_size("abc") == std::nullopt);
  CHECK(parse_size("-1") == std::nullopt);
  CHECK(parse_size("+1") == std::nullopt);
  CHECK(parse_size(" 1") == std::nullopt);
  CHECK(parse_size("1 ") == std::nullopt);
  CHECK(parse_size("1 K") == std::nullopt);
  CHECK(parse_size("1.5M") == std::nullopt);
  CHECK(parse_size("1X") == std::nullopt);
  CHECK(parse_size("1KK") == std::nullopt);
  CHECK(parse_size("1Kb2") == std::nullopt);
  CHECK(parse_size("1iB") == std::nullopt);
  CHECK(parse_size("1Bi") == std::nullopt);
  CHECK(parse_size("0x10") == std::nullopt);
}

TEST_CASE("format_bytes") {
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1.0 KiB");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(1048576) == "1.0 MiB");
  CHECK(format_bytes(100 * 1048576ull) == "100.0 MiB");
  CHECK(format_bytes(1073741824ull) == "1.0 GiB");
  CHECK(format_bytes(1099511627776ull) == "1.0 TiB");
  CHECK(format_bytes(2048 * 1099511627776ull) == "2048.0 TiB");  // no unit beyond TiB
}

TEST_CASE("format_rate") {
  CHECK(format_rate(0) == "0 B/s");
  CHECK(format_rate(999) == "999 B/s");
  CHECK(format_rate(1023) == "1023 B/s");
  CHECK(format_rate(1024) == "1.0 KiB/s");
  CHECK(format_rate(12.5 * 1024) == "12.5 KiB/s");
  CHECK(format_rate(12.3 * 1024 * 1024) == "12.3 MiB/s");
  CHECK(format_rate(1.5 * 1024 * 1024 * 1024) == "1.5 GiB/s");
  CHECK(format_rate(-5) == "0 B/s");
  CHECK(format_rate(1.0 / 0.0) == "0 B/s");
}

TEST_CASE("format_duration") {
  CHECK(format_duration(0) == "0 s");
  CHECK(format_duration(3) == "3 s");
  CHECK(format_duration(59.4) == "59 s");
  CHECK(format_duration(59.6) == "1 min 00 s");
  CHECK(format_duration(65) == "1 min 05 s");
  CHECK(format_duration(3599) == "59 min 59 s");
  CHECK(format_duration(3600) == "1 h 00 min");
  CHECK(format_duration(2 * 3600 + 3 * 60 + 59) == "2 h 03 min");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(0.0 / 0.0) == "?");
}
