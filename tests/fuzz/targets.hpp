// Every fuzz target, by name. The name is also the corpus folder (tests/fuzz/corpus/<name>/) and
// the executable (build-fuzz/tests/fuzz/fuzz_<name>). Adding a target: write
// mux::fuzz::<name>::check_one_input in <name>.cpp, list it here and in tests/fuzz/meson.build.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace mux::fuzz {

using CheckFunction = void (*)(const std::uint8_t* data, std::size_t size);

// LineFramer with CRs, the line cap and the quiet-time flush (fake clock).
namespace line_framer {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// Chat text: sanitizing, command parsing, nick rules, relay formatting.
namespace chat_line {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// MUXUP/1 header and reply lines, percent-encoding, stored file names.
namespace upload_header {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// The upload-server's MUXUP/1 state machine, fed whole and in chunks.
namespace upload_parser {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// Size, count and port flag values, through parse_size and the real command line.
namespace flag_values {
void check_one_input(const std::uint8_t* data, std::size_t size);
}

// --allow / --deny address ranges: parsing, normal form, containment.
namespace cidr {
void check_one_input(const std::uint8_t* data, std::size_t size);
}

// --token-file contents: the parse, its error lines, and AccessTokens' constant-time compare.
namespace token_file {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// --tls-pin values: hex and base64 spellings of a SHA-256 fingerprint, against a reference.
namespace tls_pin {
void check_one_input(const std::uint8_t* data, std::size_t size);
}
// The shared-room wire format (MUXROOM1) between chat-servers: decode, encode, truncation.
namespace room_event {
void check_one_input(const std::uint8_t* data, std::size_t size);
}

// --config FILE text: settings, line numbers, refusals, the normal form.
namespace config_file {
void check_one_input(const std::uint8_t* data, std::size_t size);
}

// A hostile Redis: RedisLink (hiredis, the loop) against a fake on loopback scripted by the input.
namespace redis_reply {
void check_one_input(const std::uint8_t* data, std::size_t size);
}

struct Target {
  std::string_view name;
  CheckFunction check;
};

inline constexpr std::array kTargets = {
    Target{"line_framer", &line_framer::check_one_input},
    Target{"chat_line", &chat_line::check_one_input},
    Target{"upload_header", &upload_header::check_one_input},
    Target{"flag_values", &flag_values::check_one_input},
    Target{"upload_parser", &upload_parser::check_one_input},
    Target{"cidr", &cidr::check_one_input},
    Target{"token_file", &token_file::check_one_input},
    Target{"tls_pin", &tls_pin::check_one_input},
    Target{"room_event", &room_event::check_one_input},
    Target{"config_file", &config_file::check_one_input},
    Target{"redis_reply", &redis_reply::check_one_input},
};

}  // namespace mux::fuzz
