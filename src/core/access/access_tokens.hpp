// Access tokens from --token-file: shared secrets a client must present before a server lets it
// chat or upload. The server keeps only SHA-256 digests and compares every one of them with
// CRYPTO_memcmp, so neither a token's content nor its length leaks through timing. The file is
// refused when group or others may access it, as ssh refuses a private key. Callers: the servers
// (AccessTokens), the clients (read_token_file, to send the first token). No sockets here.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mux {

class TokenFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Why a token file's content is unusable: the first bad line (1-based), or 0 for the whole file.
struct TokenFileProblem {
  std::size_t line = 0;
  std::string what;  // "longer than 512 characters", "no token in it", ...
};

// The parse of a token file's bytes, apart from the file itself (pure: unit tested and fuzzed).
// Lines end at \n; spaces and tabs around a line and a \r before its \n are dropped; blank lines
// and lines starting with # are skipped; every other line is one token. Either `tokens` holds
// them all, in file order (at least one), or `problem` says what is wrong and `tokens` is empty.
// A token shorter than `min_length` is a problem: a server's tokens must resist guessing, while
// a client sends whatever its file holds (the server judges it).
struct TokenFileParse {
  std::vector<std::string> tokens;
  std::optional<TokenFileProblem> problem;
};
TokenFileParse parse_token_file(std::string_view content, std::size_t min_length = 1);

// Tokens are 1..kMaxTokenLength printable ASCII characters without spaces (they travel inside the
// upload header and after "/token " on a chat line). Reads the file (refused when group or others
// may access it, or owned by someone other than this user or root: either could have swapped the
// secrets) and parses it with parse_token_file. Throws TokenFileError naming the file (and the
// line) when it is unusable.
std::vector<std::string> read_token_file(const std::string& path, std::size_t min_length = 1);

// SHA-256 of `text` as 64 lowercase hex digits: what a server may show of a secret to a peer it
// does not trust (chat's reconnect secrets in Redis) without giving the secret away.
std::string sha256_hex(std::string_view text);

class AccessTokens {
 public:
  AccessTokens() = default;
  explicit AccessTokens(const std::vector<std::string>& tokens);
  // A server's tokens: at least kMinTokenLength characters each.
  static AccessTokens load(const std::string& path) {
    return AccessTokens(read_token_file(path, kMinTokenLength));
  }

  [[nodiscard]] bool required() const noexcept { return !digests_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return digests_.size(); }
  // Constant time in the presented token's content and in which token matches.
  [[nodiscard]] bool accepts(std::string_view presented) const;

  // 16 characters of `openssl rand -hex` are 64 bits: past guessing at the throttle's 1 try per
  // 8 s (and a short word in a token file is more likely a placeholder than a secret).
  static constexpr std::size_t kMinTokenLength = 16;
  static constexpr std::size_t kMaxTokenLength = 512;
  static constexpr std::size_t kMaxFileBytes = 1 << 20;

 private:
  std::vector<std::array<std::uint8_t, 32>> digests_;
};

// Slows down guessing: each failed token from one address delays the refusal (the reply and the
// close) longer — 250 ms, doubling with every failure up to kMaxDelay — so a guesser gets a few
// tries a second at first and one every 8 s soon after, while a person who mistyped once barely
// notices. Failures are forgotten kForgetAfter after the last one. Past kGlobalFreePerSecond
// failures a second from all addresses together, each one waits kMaxDelay.
//
// The table lives in a shared anonymous mapping made before any fork, so fork-mode children (one
// per client, each checking its own client's token) count into the same table as the parent. It
// is a fixed array of kSlots entries indexed by a hash of the address: memory is bounded however
// many addresses guess (two addresses sharing a slot reset each other's count, which only makes
// the delay shorter, never a client wait without bound). Owned by a server; the key is the
// client's IP address (IPv6: its /64), see throttle_address.
class FailureThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  FailureThrottle();  // throws std::system_error when the mapping cannot be made
  FailureThrottle(const FailureThrottle&) = delete;
  FailureThrottle& operator=(const FailureThrottle&) = delete;
  ~FailureThrottle();

  // Counts one failure from `address` at `now`; returns how long to wait before answering it.
  std::chrono::milliseconds record_failure(std::string_view address, Clock::time_point now);
  // Failures counted for `address` (0 once forgotten).
  [[nodiscard]] std::uint32_t failures(std::string_view address, Clock::time_point now) const;

  static constexpr std::chrono::milliseconds kFirstDelay{250};
  static constexpr std::chrono::milliseconds kMaxDelay{8000};
  static constexpr std::chrono::minutes kForgetAfter{10};
  static constexpr std::size_t kSlots = 4096;
  // Failures from all addresses together: past this many in one second, every failure waits
  // kMaxDelay, so guessing from many addresses is slowed as well (each waiting guess also holds
  // a slot of the servers' unauthenticated budget).
  static constexpr std::uint64_t kGlobalFreePerSecond = 20;

 private:
  std::chrono::milliseconds global_delay(std::int64_t now_ms);

  struct Slot {
    std::uint64_t key;       // hash of the address; 0: empty
    std::uint64_t failures;  // accessed through std::atomic_ref (children update it too)
    std::int64_t last_ms;    // steady clock, milliseconds (the same clock in every process)
  };
  Slot* slots_ = nullptr;
};

// The address a peer's failures count against: "127.0.0.1:40000" -> "127.0.0.1"; IPv6 by its
// /64, "[2001:db8::1]:5" -> "2001:db8::/64"; v4-mapped as IPv4, "[::ffff:10.0.0.1]:5" ->
// "10.0.0.1".
std::string throttle_address(const std::string& peer);

}  // namespace mux
