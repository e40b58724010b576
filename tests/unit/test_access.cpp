// --allow/--deny address ranges (Cidr, AddressFilter) and --token-file (AccessTokens): parsing,
// matching across IPv4 / IPv6 / v4-mapped addresses, and the file permission refusal.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/access/access_options.hpp"
#include "core/access/access_tokens.hpp"
#include "core/access/cidr.hpp"
#include "core/access/message_mac.hpp"
#include "core/access/secret_file.hpp"
#include "core/loop/admission.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"

namespace {

sockaddr_storage address(const char* text) {
  sockaddr_storage storage{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else {
    REQUIRE(::inet_pton(AF_INET6, text, &v6->sin6_addr) == 1);
    v6->sin6_family = AF_INET6;
  }
  return storage;
}

bool contains(const char* range, const char* peer) {
  auto cidr = mux::Cidr::parse(range);
  REQUIRE(cidr);
  sockaddr_storage storage = address(peer);
  return cidr->contains(reinterpret_cast<const sockaddr*>(&storage));
}

bool allows(const mux::AddressFilter& filter, const char* peer) {
  sockaddr_storage storage = address(peer);
  return filter.allows(reinterpret_cast<const sockaddr*>(&storage));
}

// A file in a fresh temporary directory, removed with it.
struct TempFile {
  std::filesystem::path directory;
  std::string path;
  TempFile(const std::string& content, mode_t mode) {
    std::string pattern = (std::filesystem::temp_directory_path() / "mux-tokens-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    directory = pattern;
    path = (directory / "tokens").string();
    std::ofstream(path) << content;
    REQUIRE(::chmod(path.c_str(), mode) == 0);
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
};

std::string load_error(const std::string& path, std::size_t min_length = 1) {
  try {
    mux::read_token_file(path, min_length);
  } catch (const mux::TokenFileError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("cidr: parsing normalises and refuses what is not an address range") {
  CHECK(mux::Cidr::parse("10.0.0.0/8")->to_string() == "10.0.0.0/8");
  CHECK(mux::Cidr::parse("10.1.2.3/8")->to_string() == "10.0.0.0/8");
  CHECK(mux::Cidr::parse("127.0.0.2")->to_string() == "127.0.0.2/32");
  CHECK(mux::Cidr::parse("0.0.0.0/0")->to_string() == "0.0.0.0/0");
  CHECK(mux::Cidr::parse("2001:db8::1/32")->to_string() == "2001:db8::/32");
  CHECK(mux::Cidr::parse("::1")->to_string() == "::1/128");
  CHECK(mux::Cidr::parse("::/0")->to_string() == "::/0");
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1",
                          "10.0.0.0/8/8", "10.0.0/8", "example.org", "10.0.0.0/ 8", "10.0.0.0/08x",
                          "1.2.3.4 ", "10.0.0.0/0008", "10.0.0.0/-0", "10.0.0.0/+8"}) {
    CAPTURE(bad);
    CHECK_FALSE(mux::Cidr::parse(bad));
  }
  // A NUL would end inet_pton's reading early (the fuzzer's reference refuses it).
  CHECK_FALSE(mux::Cidr::parse(std::string_view("10.0.0.1\0junk", 13)));
}

TEST_CASE("cidr: matching IPv4, IPv6 and v4-mapped peers") {
  CHECK(contains("10.0.0.0/8", "10.255.1.2"));
  CHECK_FALSE(contains("10.0.0.0/8", "11.0.0.1"));
  CHECK(contains("127.0.0.2", "127.0.0.2"));
  CHECK_FALSE(contains("127.0.0.2", "127.0.0.3"));
  CHECK(contains("192.168.1.128/25", "192.168.1.200"));
  CHECK_FALSE(contains("192.168.1.128/25", "192.168.1.127"));
  CHECK(contains("0.0.0.0/0", "8.8.8.8"));
  CHECK_FALSE(contains("0.0.0.0/0", "2001:db8::1"));  // an IPv4 rule never matches real IPv6
  // A client reaching a dual-stack socket over IPv4 appears as ::ffff:a.b.c.d.
  CHECK(contains("10.0.0.0/8", "::ffff:10.1.2.3"));
  CHECK(contains("::ffff:10.0.0.0/104", "10.1.2.3"));
  CHECK(contains("2001:db8::/32", "2001:db8:ffff::1"));
  CHECK_FALSE(contains("2001:db8::/32", "2001:db9::1"));
  CHECK(contains("::1", "::1"));
  CHECK_FALSE(contains("::1", "127.0.0.1"));
  CHECK(contains("::/0", "127.0.0.1"));  // every address, both families
  CHECK(contains("fe80::/10", "febf::1"));
  CHECK_FALSE(contains("fe80::/10", "fec0::1"));
}

TEST_CASE("cidr: --deny wins over --allow; no --allow means everyone not denied") {
  mux::AddressFilter open;
  CHECK(allows(open, "203.0.113.9"));

  mux::AddressFilter only_loopback;
  only_loopback.allow(*mux::Cidr::parse("127.0.0.0/8"));
  only_loopback.allow(*mux::Cidr::parse("::1"));
  CHECK(allows(only_loopback, "127.0.0.2"));
  CHECK(allows(only_loopback, "::1"));
  CHECK(allows(only_loopback, "::ffff:127.0.0.1"));
  CHECK_FALSE(allows(only_loopback, "10.0.0.1"));

  only_loopback.deny(*mux::Cidr::parse("127.0.0.2"));
  CHECK_FALSE(allows(only_loopback, "127.0.0.2"));
  CHECK(allows(only_loopback, "127.0.0.3"));

  mux::AddressFilter deny_only;
  deny_only.deny(*mux::Cidr::parse("127.0.0.2/32"));
  CHECK_FALSE(allows(deny_only, "127.0.0.2"));
  CHECK(allows(deny_only, "127.0.0.1"));

  sockaddr unix_address{};
  unix_address.sa_family = AF_UNIX;
  CHECK_FALSE(deny_only.allows(&unix_address));
  CHECK(open.allows(&unix_address));
}

TEST_CASE("tokens: one per line, blank lines and comments skipped, compared exactly") {
  TempFile file("# team tokens\nalpha-123\n\n  beta_456\r\n#gamma\n", 0600);
  auto tokens = mux::read_token_file(file.path);
  REQUIRE(tokens.size() == 2);
  CHECK(tokens[0] == "alpha-123");
  CHECK(tokens[1] == "beta_456");
  mux::AccessTokens access(tokens);
  CHECK(access.required());
  CHECK(access.accepts("alpha-123"));
  CHECK(access.accepts("beta_456"));
  CHECK_FALSE(access.accepts("#gamma"));
  CHECK_FALSE(access.accepts("alpha-12"));
  CHECK_FALSE(access.accepts("alpha-1234"));
  CHECK_FALSE(access.accepts(""));
  CHECK_FALSE(access.accepts(std::string("alpha-123\0", 10)));
  CHECK_FALSE(mux::AccessTokens().required());
}

TEST_CASE("tokens: a file others can read is refused, like ssh refuses a key") {
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0700 | 0004}) {
    TempFile file("secret\n", mode);
    CAPTURE(mode);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
    CHECK(load_error(file.path) == "--token-file " + file.path +
                                       ": group or others can access it (mode " + octal +
                                       "); run: chmod 600 " + file.path);
  }
  TempFile private_file("secret\n", 0400);
  CHECK(mux::read_token_file(private_file.path).size() == 1);
}

TEST_CASE("tokens: unusable files say why and where") {
  CHECK(load_error("/nonexistent/tokens") ==
        "--token-file /nonexistent/tokens: No such file or directory");
  CHECK(load_error("/tmp") == "--token-file /tmp: not a regular file");
  TempFile empty("# nothing yet\n\n", 0600);
  CHECK(load_error(empty.path) == "--token-file " + empty.path + ": no token in it");
  TempFile spaced("good\nhas space\n", 0600);
  CHECK(load_error(spaced.path) ==
        "--token-file " + spaced.path + ": line 2: a token is printable ASCII without spaces");
  TempFile control(
      "a\x01"
      "b\n",
      0600);
  CHECK(load_error(control.path) ==
        "--token-file " + control.path + ": line 1: a token is printable ASCII without spaces");
  TempFile long_token(std::string(mux::AccessTokens::kMaxTokenLength + 1, 'x') + "\n", 0600);
  CHECK(load_error(long_token.path) ==
        "--token-file " + long_token.path + ": line 1: longer than 512 characters");
}

TEST_CASE("tokens: a server's tokens are at least 16 characters; a client sends what it has") {
  TempFile file("0123456789abcdef\nshort-but-15ch\n", 0600);
  CHECK(load_error(file.path, mux::AccessTokens::kMinTokenLength) ==
        "--token-file " + file.path +
            ": line 2: shorter than 16 characters (make one with: openssl "
            "rand -hex 16)");
  CHECK(mux::read_token_file(file.path).size() == 2);  // the client's reading
  TempFile strong("0123456789abcdef\n", 0600);
  CHECK(mux::AccessTokens::load(strong.path).size() == 1);
  CHECK(mux::parse_token_file("abc", 4).problem->line == 1);
  CHECK(mux::parse_token_file("abcd", 4).tokens == std::vector<std::string>{"abcd"});
}

TEST_CASE("tokens: a file owned by another user is refused") {
  if (::geteuid() != 0) return;  // only root can give a file away
  TempFile file("0123456789abcdef\n", 0600);
  REQUIRE(::chown(file.path.c_str(), 65534, 65534) == 0);
  CHECK(load_error(file.path) == "--token-file " + file.path +
                                     ": owned by uid 65534, not by this user (uid 0) or root; run: "
                                     "chown 0 " +
                                     file.path);
}

TEST_CASE("tokens: the parse of a file's bytes, without the file") {
  using mux::parse_token_file;
  auto tokens_of = [](std::string_view content) {
    mux::TokenFileParse parsed = parse_token_file(content);
    REQUIRE_FALSE(parsed.problem);
    return parsed.tokens;
  };
  CHECK(tokens_of("a") == std::vector<std::string>{"a"});  // no final newline needed
  CHECK(tokens_of(" \ta-1\t \r\n\r\n# note\n  #also a note\nb#c\nb#c\n") ==
        std::vector<std::string>{"a-1", "b#c", "b#c"});  // # only at the start; duplicates kept
  std::string longest(mux::AccessTokens::kMaxTokenLength, '~');
  CHECK(tokens_of("!\n" + longest + "\n") == std::vector<std::string>{"!", longest});

  auto problem_of = [](std::string_view content) {
    mux::TokenFileParse parsed = parse_token_file(content);
    REQUIRE(parsed.problem);
    CHECK(parsed.tokens.empty());
    return std::pair(parsed.problem->line, parsed.problem->what);
  };
  const std::string not_printable = "a token is printable ASCII without spaces";
  CHECK(problem_of("") == std::pair<std::size_t, std::string>(0, "no token in it"));
  CHECK(problem_of("\n \r\n#x\n") == std::pair<std::size_t, std::string>(0, "no token in it"));
  CHECK(problem_of("ok\n\nbad token\nok\n") ==
        std::pair<std::size_t, std::string>(3, not_printable));
  CHECK(problem_of("\ra") ==
        std::pair<std::size_t, std::string>(1, not_printable));  // \r only at the end
  CHECK(problem_of("a\rb") == std::pair<std::size_t, std::string>(1, not_printable));
  CHECK(problem_of(std::string_view("a\0b", 3)) ==
        std::pair<std::size_t, std::string>(1, not_printable));
  CHECK(problem_of("caf\xC3\xA9") == std::pair<std::size_t, std::string>(1, not_printable));
  CHECK(problem_of("a\x7F") == std::pair<std::size_t, std::string>(1, not_printable));
  CHECK(problem_of("x\n" + longest + "~") ==
        std::pair<std::size_t, std::string>(2, "longer than 512 characters"));
  std::string huge(mux::AccessTokens::kMaxFileBytes + 1, '#');
  CHECK(problem_of(huge) == std::pair<std::size_t, std::string>(0, "larger than 1048576 bytes"));
}

TEST_CASE("tokens: failures from one address double the delay, up to a bound, then are forgotten") {
  mux::FailureThrottle throttle;
  auto now = mux::FailureThrottle::Clock::now();
  using std::chrono::milliseconds;
  CHECK(throttle.record_failure("127.0.0.2", now) == milliseconds(250));
  CHECK(throttle.record_failure("127.0.0.2", now) == milliseconds(500));
  CHECK(throttle.record_failure("127.0.0.2", now) == milliseconds(1000));
  CHECK(throttle.record_failure("127.0.0.3", now) == milliseconds(250));  // its own count
  for (int i = 0; i < 100; ++i)
    throttle.record_failure("127.0.0.2", now);
  CHECK(throttle.record_failure("127.0.0.2", now) == mux::FailureThrottle::kMaxDelay);
  CHECK(throttle.failures("127.0.0.2", now) == 104);
  auto later = now + mux::FailureThrottle::kForgetAfter;
  CHECK(throttle.failures("127.0.0.2", later) == 0);
  CHECK(throttle.record_failure("127.0.0.2", later) == milliseconds(250));
}

TEST_CASE("tokens: failures from many addresses are slowed down together") {
  mux::FailureThrottle throttle;
  auto now = mux::FailureThrottle::Clock::now();
  using std::chrono::milliseconds;
  for (std::uint64_t i = 0; i < mux::FailureThrottle::kGlobalFreePerSecond; ++i)
    CHECK(throttle.record_failure(fmt::format("10.0.{}.{}", i / 256, i % 256), now) ==
          milliseconds(250));
  // A fresh address, but too many failures this second: it waits as long as a repeat offender.
  CHECK(throttle.record_failure("10.1.0.1", now) == mux::FailureThrottle::kMaxDelay);
  CHECK(throttle.record_failure("10.1.0.2", now + std::chrono::seconds(2)) == milliseconds(250));
}

namespace {
std::string key_of(const char* text) {
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  if (::inet_pton(AF_INET6, text, &v6.sin6_addr) == 1)
    return mux::address_key(reinterpret_cast<const sockaddr*>(&v6), sizeof v6);
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, text, &v4.sin_addr) == 1);
  return mux::address_key(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
}
}  // namespace

TEST_CASE("admission: the per-address key is the IPv4 address, or the IPv6 /64") {
  CHECK(key_of("2001:db8::1") == key_of("2001:db8::ffff:1"));  // one host's /64
  CHECK(key_of("2001:db8::1") != key_of("2001:db8:0:1::1"));   // the next /64
  CHECK(key_of("127.0.0.2") != key_of("127.0.0.3"));
  CHECK(key_of("::ffff:127.0.0.2") == key_of("127.0.0.2"));  // v4-mapped is IPv4
  CHECK(key_of("::ffff:127.0.0.2") != key_of("::ffff:127.0.0.3"));
}

TEST_CASE("tokens: the throttle counts an IPv4 address, or an IPv6 /64") {
  CHECK(mux::throttle_address("127.0.0.1:40000") == "127.0.0.1");
  CHECK(mux::throttle_address("[::ffff:127.0.0.2]:5") == "127.0.0.2");  // v4-mapped is IPv4
  CHECK(mux::throttle_address("[2001:db8::1]:5") == "2001:db8::/64");
  CHECK(mux::throttle_address("[2001:db8::ffff:7]:6") == "2001:db8::/64");     // one host's /64
  CHECK(mux::throttle_address("[2001:db8:0:1::1]:5") == "2001:db8:0:1::/64");  // the next /64
  CHECK(mux::throttle_address("[::1]:40000") == "::/64");
  // Guesses from two addresses of one /64 wait as one address's do.
  mux::FailureThrottle throttle;
  auto now = mux::FailureThrottle::Clock::now();
  auto first = throttle.record_failure(mux::throttle_address("[2001:db8::1]:5"), now);
  auto second = throttle.record_failure(mux::throttle_address("[2001:db8::2]:6"), now);
  CHECK(second > first);
  CHECK(throttle.failures(mux::throttle_address("[2001:db8::3]:7"), now) == 2);
  CHECK(throttle.failures(mux::throttle_address("[2001:db8:0:1::1]:7"), now) == 0);
}

// Issue 24: the start-up warnings. An unbound TCP socket's address is 0.0.0.0, which stands
// for every interface here; a loopback listener gets no plaintext warning.
TEST_CASE("exposure warnings: plaintext off loopback, tokens without TLS, socket activation") {
  mux::Fd everywhere(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(everywhere);
  CHECK_FALSE(mux::is_loopback_socket(everywhere.get(), false));
  mux::Fd loopback = mux::listen_tcp("127.0.0.1", 0);
  CHECK(mux::is_loopback_socket(loopback.get(), false));
  mux::ServerAccessOptions plain;
  std::vector<std::string> warned = mux::exposure_warnings(plain, everywhere.get(), false, false);
  REQUIRE(warned.size() == 1);
  CHECK(warned[0].starts_with("listening on 0.0.0.0:0 without TLS"));
  CHECK(mux::exposure_warnings(plain, loopback.get(), false, false).empty());
  mux::ServerAccessOptions tokens;
  tokens.token_file = "tokens";
  CHECK(mux::exposure_warnings(tokens, loopback.get(), false, false) ==
        std::vector<std::string>{
            "--token-file without TLS: tokens cross the network readable (add --tls or "
            "--tls-cert)"});
  tokens.tls_requested = true;
  CHECK(mux::exposure_warnings(tokens, everywhere.get(), false, false).empty());
  CHECK(mux::exposure_warnings(plain, loopback.get(), true, true).size() == 1);
  CHECK(mux::exposure_warnings(plain, loopback.get(), true, false).empty());
}

TEST_CASE("--allow/--deny say what they do") {
  mux::AddressFilter deny_only;
  deny_only.deny(*mux::Cidr::parse("10.0.0.0/8"));
  CHECK(deny_only.describe() == "refusing 1 range (--deny)");
  mux::AddressFilter both;
  both.allow(*mux::Cidr::parse("127.0.0.0/8"));
  both.allow(*mux::Cidr::parse("::1"));
  both.deny(*mux::Cidr::parse("127.0.0.2"));
  CHECK(both.describe() == "accepting only 2 ranges (--allow), refusing 1 range (--deny)");
}

TEST_CASE("message mac: HMAC-SHA256 tags over length-prefixed parts") {
  mux::MessageMac mac("0123456789abcdef-room-secret");
  std::string tag = mac.tag({"room", "batch", "payload"});
  CHECK(tag.size() == mux::MessageMac::kTagChars);
  CHECK(tag.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(mac.tag({"room", "batch", "payload"}) == tag);  // deterministic
  CHECK(mac.verify({"room", "batch", "payload"}, tag));
  // Parts are length-prefixed: moving bytes between them changes the tag.
  CHECK_FALSE(mac.verify({"roomb", "atch", "payload"}, tag));
  CHECK_FALSE(mac.verify({"room", "batch", "payloaD"}, tag));
  CHECK_FALSE(mac.verify({"room", "batch", "payload"}, tag.substr(0, 31)));
  mux::MessageMac other("another secret of sixteen bytes");
  CHECK_FALSE(other.verify({"room", "batch", "payload"}, tag));
  // RFC 4231 test case 2 ("Jefe"), with this class's length prefixes it differs, so check the
  // raw HMAC is keyed at all: an empty part list still gives a key-dependent tag.
  CHECK(mac.tag({}) != other.tag({}));
}

TEST_CASE("message mac: the secret file is refused when short or open to others") {
  TempFile short_secret("0123456789\n", 0600);
  CHECK_THROWS_WITH_AS(mux::MessageMac::from_file("--room-secret-file", short_secret.path),
                       doctest::Contains("shorter than 16 bytes"), mux::SecretFileError);
  TempFile open_secret("0123456789abcdefgh\n", 0644);
  CHECK_THROWS_WITH_AS(mux::MessageMac::from_file("--room-secret-file", open_secret.path),
                       doctest::Contains("group or others can access it"), mux::SecretFileError);
  // The final line end is not part of the secret.
  TempFile good("0123456789abcdefgh\n", 0600);
  auto with_newline = mux::MessageMac::from_file("--room-secret-file", good.path);
  CHECK(with_newline.tag({"x"}) == mux::MessageMac("0123456789abcdefgh").tag({"x"}));
}
