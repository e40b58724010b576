#include "core/access/access_tokens.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/access/secret_file.hpp"

namespace mux {
namespace {

std::array<std::uint8_t, 32> sha256(std::string_view text) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != digest.size())
    throw std::runtime_error("SHA-256 is not available from OpenSSL");
  return digest;
}

}  // namespace

std::string sha256_hex(std::string_view text) {
  std::string hex;
  for (std::uint8_t byte : sha256(text))
    fmt::format_to(std::back_inserter(hex), "{:02x}", byte);
  return hex;
}

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}

bool printable_without_spaces(std::string_view token) {
  for (char c : token) {
    auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> read_token_file(const std::string& path, std::size_t min_length) {
  std::string content;
  try {
    content = read_secret_file("--token-file", path, AccessTokens::kMaxFileBytes);
  } catch (const SecretFileError& error) {
    throw TokenFileError(error.what());
  }
  TokenFileParse parsed = parse_token_file(content, min_length);
  if (parsed.problem) {
    if (parsed.problem->line == 0)
      throw TokenFileError(fmt::format("--token-file {}: {}", path, parsed.problem->what));
    throw TokenFileError(fmt::format("--token-file {}: line {}: {}", path, parsed.problem->line,
                                     parsed.problem->what));
  }
  return std::move(parsed.tokens);
}

TokenFileParse parse_token_file(std::string_view content, std::size_t min_length) {
  auto refuse = [](std::size_t line, std::string what) {
    return TokenFileParse{{}, TokenFileProblem{line, std::move(what)}};
  };
  if (content.size() > AccessTokens::kMaxFileBytes)
    return refuse(0, fmt::format("larger than {} bytes", AccessTokens::kMaxFileBytes));
  TokenFileParse parsed;
  std::size_t line_number = 0;
  std::string_view rest = content;
  while (!rest.empty()) {
    ++line_number;
    std::size_t end = rest.find('\n');
    std::string_view line = trim(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    if (line.empty() || line.front() == '#') continue;
    if (line.size() > AccessTokens::kMaxTokenLength)
      return refuse(line_number,
                    fmt::format("longer than {} characters", AccessTokens::kMaxTokenLength));
    if (!printable_without_spaces(line))
      return refuse(line_number, "a token is printable ASCII without spaces");
    if (line.size() < min_length)
      return refuse(line_number,
                    fmt::format("shorter than {} characters (make one with: openssl rand -hex 16)",
                                min_length));
    parsed.tokens.emplace_back(line);
  }
  if (parsed.tokens.empty()) return refuse(0, "no token in it");
  return parsed;
}

AccessTokens::AccessTokens(const std::vector<std::string>& tokens) {
  digests_.reserve(tokens.size());
  for (const std::string& token : tokens)
    digests_.push_back(sha256(token));
}

bool AccessTokens::accepts(std::string_view presented) const {
  // Hashing first makes every comparison 32 bytes whatever the presented length; every digest is
  // compared, so the time does not tell which token (if any) matched.
  std::array<std::uint8_t, 32> digest = sha256(presented);
  int matched = 0;
  for (const auto& known : digests_)
    matched |= CRYPTO_memcmp(known.data(), digest.data(), digest.size()) == 0 ? 1 : 0;
  return matched != 0;
}

namespace {

std::uint64_t address_key(std::string_view address) {
  // FNV-1a: spreads addresses over the slots; 0 is kept for "empty".
  std::uint64_t hash = 14695981039346656037ULL;
  for (char c : address) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return hash == 0 ? 1 : hash;
}

std::int64_t milliseconds_of(FailureThrottle::Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
}

}  // namespace

FailureThrottle::FailureThrottle() {
  // One more slot than the addresses use: the count of all failures in the current second.
  void* mapping = ::mmap(nullptr, sizeof(Slot) * (kSlots + 1), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED)
    throw std::system_error(errno, std::generic_category(), "token failure table");
  slots_ = static_cast<Slot*>(mapping);  // zero-filled: every slot empty
}

FailureThrottle::~FailureThrottle() {
  ::munmap(slots_, sizeof(Slot) * (kSlots + 1));
}

std::chrono::milliseconds FailureThrottle::record_failure(std::string_view address,
                                                          Clock::time_point now) {
  std::uint64_t key = address_key(address);
  Slot& slot = slots_[key % kSlots];
  std::atomic_ref<std::uint64_t> slot_key(slot.key);
  std::atomic_ref<std::uint64_t> failures(slot.failures);
  std::atomic_ref<std::int64_t> last(slot.last_ms);
  std::int64_t now_ms = milliseconds_of(now);
  auto forget_after = std::chrono::duration_cast<std::chrono::milliseconds>(kForgetAfter).count();
  if (slot_key.load() != key || now_ms - last.load() >= forget_after) {
    slot_key.store(key);
    failures.store(0);
  }
  std::uint64_t count = failures.fetch_add(1) + 1;
  last.store(now_ms);
  std::chrono::milliseconds delay = kFirstDelay;
  for (std::uint64_t i = 1; i < count && delay < kMaxDelay; ++i)
    delay *= 2;
  return std::max(std::min(delay, std::chrono::milliseconds(kMaxDelay)), global_delay(now_ms));
}

std::chrono::milliseconds FailureThrottle::global_delay(std::int64_t now_ms) {
  // A fixed one-second window: racing processes may reset it twice or lose a count, which only
  // moves the threshold by a failure or two.
  Slot& slot = slots_[kSlots];
  std::atomic_ref<std::uint64_t> window(slot.key);
  std::atomic_ref<std::uint64_t> failures(slot.failures);
  auto second = static_cast<std::uint64_t>(now_ms / 1000) + 1;  // 0 stays "empty"
  if (window.load() != second) {
    window.store(second);
    failures.store(0);
  }
  if (failures.fetch_add(1) + 1 <= kGlobalFreePerSecond) return std::chrono::milliseconds(0);
  return kMaxDelay;
}

std::uint32_t FailureThrottle::failures(std::string_view address, Clock::time_point now) const {
  std::uint64_t key = address_key(address);
  Slot& slot = slots_[key % kSlots];
  auto forget_after = std::chrono::duration_cast<std::chrono::milliseconds>(kForgetAfter).count();
  if (std::atomic_ref<std::uint64_t>(slot.key).load() != key ||
      milliseconds_of(now) - std::atomic_ref<std::int64_t>(slot.last_ms).load() >= forget_after)
    return 0;
  return static_cast<std::uint32_t>(std::atomic_ref<std::uint64_t>(slot.failures).load());
}

std::string throttle_address(const std::string& peer) {
  // Peers are written by format_endpoint: "HOST:PORT", IPv6 in brackets, so the port is always
  // after the last colon.
  std::size_t colon = peer.rfind(':');
  std::string host = colon == std::string::npos ? peer : peer.substr(0, colon);
  if (host.size() < 2 || host.front() != '[' || host.back() != ']') return host;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6) != 1) return host;
  char text[INET6_ADDRSTRLEN] = {};
  // A v4-mapped address (a dual-stack listener) is the same machine as its IPv4 form.
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    in_addr v4{};
    std::memcpy(&v4, v6.s6_addr + 12, sizeof v4);
    return ::inet_ntop(AF_INET, &v4, text, sizeof text) != nullptr ? std::string(text) : host;
  }
  // One IPv6 host is routinely given a whole /64 (SLAAC, privacy addresses): its guesses are
  // counted together, as admission counts its connections.
  std::fill(std::begin(v6.s6_addr) + 8, std::end(v6.s6_addr), std::uint8_t{0});
  if (::inet_ntop(AF_INET6, &v6, text, sizeof text) == nullptr) return host;
  return fmt::format("{}/64", text);
}

}  // namespace mux
