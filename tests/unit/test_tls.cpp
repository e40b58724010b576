// TlsStream and the TLS contexts over real sockets (AF_UNIX socketpairs and TCP loopback), with
// certificates made at run time (test_pki). Both ends run in this thread: each step calls the
// non-blocking side that is waiting, as an event loop would.
#include <doctest/doctest.h>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/loop/byte_stream.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"
#include "core/loop/output_queue.hpp"
#include "core/tls/tls_context.hpp"
#include "core/tls/tls_stream.hpp"
#include "test_pki.hpp"

namespace {

using mux::IoResult;
using mux::TlsClientConfig;
using mux::TlsClientContext;
using mux::TlsServerConfig;
using mux::TlsServerContext;
using mux::TlsStream;

struct SocketPair {
  mux::Fd server;
  mux::Fd client;
};

SocketPair make_socket_pair(int send_buffer = 0) {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  if (send_buffer > 0) {
    for (int fd : fds)
      REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer) == 0);
  }
  return {mux::Fd(fds[0]), mux::Fd(fds[1])};
}

const mux::testing::TestPki& pki() {
  static const mux::testing::TestPki instance;
  return instance;
}

TlsServerConfig server_config(const std::string& name = "server") {
  return {pki().path(name + ".pem"), pki().path(name + ".key"), "", ""};
}

TlsClientConfig client_config() {
  TlsClientConfig config;
  config.ca_file = pki().ca();
  return config;
}

// Steps both handshakes until neither is waiting (or a bound is reached: a stuck pair stays
// blocked and the test sees it).
std::pair<IoResult, IoResult> run_handshakes(mux::ByteStream& server, mux::ByteStream& client) {
  IoResult server_result = IoResult::blocked_on();
  IoResult client_result = IoResult::blocked_on();
  for (int round = 0; round < 200 && (server_result.blocked() || client_result.blocked());
       ++round) {
    if (client_result.blocked()) client_result = client.handshake();
    if (server_result.blocked()) server_result = server.handshake();
  }
  return {server_result, client_result};
}

// Moves everything queued from `from` into `to` through both streams; returns what `to` read.
std::string transfer(mux::ByteStream& from, mux::OutputQueue& queue, mux::ByteStream& to,
                     std::size_t expected) {
  std::string received;
  std::vector<char> buffer(200000);
  for (int round = 0; round < 1000000 && received.size() < expected; ++round) {
    IoResult failure;
    REQUIRE(queue.write_to(from, failure) != mux::OutputQueue::Status::failed);
    do {
      IoResult got = to.read(buffer.data(), buffer.size());
      if (got.ok()) received.append(buffer.data(), got.bytes);
      REQUIRE_FALSE(got.status == IoResult::Status::failed);
      if (!got.ok()) break;
    } while (to.has_buffered_input());
  }
  return received;
}

std::string pattern(std::size_t length, unsigned seed) {
  std::string text(length, '\0');
  unsigned state = seed;
  for (char& c : text) {
    state = state * 1103515245u + 12345u;
    c = static_cast<char>(state >> 16);
  }
  return text;
}

struct TlsPair {
  SocketPair sockets;
  std::unique_ptr<TlsStream> server;
  std::unique_ptr<TlsStream> client;
};

TlsPair connect_pair(const TlsServerContext& server_context, const TlsClientContext& client_context,
                     int send_buffer = 0) {
  TlsPair pair{make_socket_pair(send_buffer), nullptr, nullptr};
  pair.server = server_context.make_stream(pair.sockets.server.get());
  pair.client = client_context.make_stream(pair.sockets.client.get());
  return pair;
}

std::string read_everything(mux::ByteStream& stream, IoResult& last) {
  std::string received;
  char buffer[4096];
  for (int round = 0; round < 1000; ++round) {
    last = stream.read(buffer, sizeof buffer);
    if (!last.ok()) break;
    received.append(buffer, last.bytes);
  }
  return received;
}

}  // namespace

TEST_CASE("tls: handshake, data both ways, close_notify in each direction") {
  TlsServerContext server_context(server_config());
  TlsClientContext client_context(client_config(), "localhost");
  TlsPair pair = connect_pair(server_context, client_context);

  CHECK(pair.server->wants() == EPOLLIN);  // a server waits for the ClientHello
  auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
  REQUIRE(server_done.ok());
  REQUIRE(client_done.ok());
  CHECK(pair.client->describe_session().rfind("TLSv1.3 ", 0) == 0);
  CHECK(pair.client->peer_fingerprint().rfind("sha256:", 0) == 0);

  mux::OutputQueue to_server;
  to_server.push("hello from the client\n");
  CHECK(transfer(*pair.client, to_server, *pair.server, 22) == "hello from the client\n");
  mux::OutputQueue to_client;
  to_client.push("hello from the server\n");
  CHECK(transfer(*pair.server, to_client, *pair.client, 22) == "hello from the server\n");

  // The client half-closes (an upload's end): the server sees the end, and can still answer.
  REQUIRE(pair.client->shutdown_write().ok());
  IoResult last;
  CHECK(read_everything(*pair.server, last).empty());
  CHECK(last.status == IoResult::Status::end_of_stream);
  to_client.push("OK 5 abc\n");
  CHECK(transfer(*pair.server, to_client, *pair.client, 9) == "OK 5 abc\n");
  REQUIRE(pair.server->shutdown_write().ok());
  CHECK(read_everything(*pair.client, last).empty());
  CHECK(last.status == IoResult::Status::end_of_stream);
}

TEST_CASE("tls: data and close_notify read together: the end is reported on the next read") {
  TlsServerContext server_context(server_config());
  TlsClientContext client_context(client_config(), "localhost");
  TlsPair pair = connect_pair(server_context, client_context);
  auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
  REQUIRE(server_done.ok());
  REQUIRE(client_done.ok());
  iovec chunk{const_cast<char*>("last bytes"), 10};
  REQUIRE(pair.client->writev(&chunk, 1).bytes == 10);
  REQUIRE(pair.client->shutdown_write().ok());
  char buffer[100];
  IoResult got = pair.server->read(buffer, sizeof buffer);
  REQUIRE(got.ok());
  CHECK(std::string(buffer, got.bytes) == "last bytes");
  // The socket has nothing more to say (epoll stays silent): the stream must.
  CHECK(pair.server->has_buffered_input());
  CHECK(pair.server->read(buffer, sizeof buffer).status == IoResult::Status::end_of_stream);
}

TEST_CASE("tls: many small chunks and large ones through a tiny socket buffer arrive intact") {
  TlsServerContext server_context(server_config());
  TlsClientContext client_context(client_config(), "127.0.0.1");  // IP SAN checked
  TlsPair pair = connect_pair(server_context, client_context, 4096);
  auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
  REQUIRE(server_done.ok());
  REQUIRE(client_done.ok());

  // Short lines (gathered into records), then large blocks (sealed in place), interleaved, so
  // would_block retries happen on both paths with the 4 KiB buffer.
  mux::OutputQueue queue;
  std::string expected;
  for (unsigned i = 0; i < 600; ++i) {
    std::string line = "line " + std::to_string(i) + " " + pattern(i % 97, i) + "\n";
    expected += line;
    queue.push(line);
    if (i % 150 == 0) {
      std::string block = pattern(100000 + i, i);
      expected += block;
      queue.push(block);
    }
  }
  std::string received = transfer(*pair.client, queue, *pair.server, expected.size());
  CHECK(received.size() == expected.size());
  CHECK(received == expected);
}

TEST_CASE("tls: over TCP loopback with the connect helper the clients use") {
  TlsServerContext server_context(server_config());
  TlsClientContext client_context(client_config(), "localhost");
  mux::Fd listener = mux::listen_tcp("127.0.0.1", 0);
  std::string address = mux::local_address(listener.get());
  auto port = static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  mux::Fd client_fd = mux::connect_within("127.0.0.1", port, std::chrono::seconds{5});
  mux::Acceptor acceptor(std::move(listener));
  std::optional<mux::Acceptor::Accepted> accepted;
  bool dropped = false;
  for (int i = 0; i < 1000 && !accepted; ++i)
    accepted = acceptor.accept(dropped);
  REQUIRE(accepted);
  auto server = server_context.make_stream(accepted->fd.get());
  auto client = client_context.make_stream(client_fd.get());
  // The client blocks in poll() while the server has not answered: one step of the server
  // between short client waits.
  IoResult client_result = IoResult::blocked_on();
  IoResult server_result = IoResult::blocked_on();
  for (int i = 0; i < 100 && (client_result.blocked() || server_result.blocked()); ++i) {
    if (client_result.blocked())
      client_result = mux::complete_handshake(*client, std::chrono::milliseconds(1));
    if (client_result.status == IoResult::Status::failed && client_result.error == ETIMEDOUT)
      client_result = IoResult::blocked_on();
    if (server_result.blocked()) server_result = server->handshake();
  }
  CHECK(client_result.ok());
  CHECK(server_result.ok());
}

TEST_CASE("tls: a client refuses what it cannot trust, with one clear reason") {
  TlsServerContext server_context(server_config());

  SUBCASE("a CA it does not know") {
    TlsClientConfig config;
    config.ca_file = pki().other_ca();
    TlsClientContext client_context(config, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe().rfind("the certificate is not signed by a trusted CA", 0) == 0);
    CHECK(server_done.status == IoResult::Status::failed);
  }
  SUBCASE("the system trust store does not know a private CA") {
    TlsClientContext client_context(TlsClientConfig{}, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe().find("not signed by a trusted CA") != std::string::npos);
  }
  SUBCASE("a certificate for another host name") {
    TlsClientContext client_context(client_config(), "mux.example.org");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe().rfind(
              "the certificate is not for host name 'mux.example.org' (its fingerprint is sha256:",
              0) == 0);
  }
  SUBCASE("--tls-server-name overrides the host") {
    TlsClientConfig config = client_config();
    config.server_name = "localhost";
    TlsClientContext client_context(config, "mux.example.org");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    CHECK(client_done.ok());
    CHECK(server_done.ok());
  }
  SUBCASE("an expired certificate") {
    TlsServerContext expired(server_config("expired"));
    CHECK(expired.describe_certificate().find("(EXPIRED)") != std::string::npos);
    TlsClientContext client_context(client_config(), "localhost");
    TlsPair pair = connect_pair(expired, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe() == "the peer's certificate has expired");
  }
}

TEST_CASE("tls: --tls-pin accepts exactly the pinned certificate, self-signed or not") {
  TlsServerContext server_context(server_config("selfsigned"));
  std::string description = server_context.describe_certificate();
  std::string fingerprint = description.substr(description.find("sha256:"), 7 + 32 * 3 - 1);
  std::size_t key_at = description.find(", public key sha256//");
  REQUIRE(key_at != std::string::npos);
  std::string key_pin = description.substr(key_at + 13);
  REQUIRE(key_pin.size() == 8 + 44);

  SUBCASE("a public-key pin, as curl takes it") {
    TlsClientConfig config;
    config.pin = key_pin;
    TlsClientContext client_context(config, "mux.example.org");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    CHECK(client_done.ok());
    CHECK(pair.client->peer_key_pin() == key_pin);
  }
  SUBCASE("a wrong public-key pin is refused") {
    TlsClientConfig config;
    config.pin = "sha256//" + std::string(43, 'A') + "=";
    TlsClientContext client_context(config, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe().starts_with("the certificate does not match --tls-pin"));
  }
  SUBCASE("openssl 3's own output, pasted whole") {
    TlsClientConfig config;
    config.pin = "sha256 Fingerprint=" + fingerprint.substr(7);
    TlsClientContext client_context(config, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    CHECK(client_done.ok());
  }

  SUBCASE("right pin, even for a host name the certificate does not carry") {
    TlsClientConfig config;
    config.pin = fingerprint;
    TlsClientContext client_context(config, "mux.example.org");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    CHECK(client_done.ok());
    CHECK(server_done.ok());
    CHECK(pair.client->peer_fingerprint() == fingerprint);
  }
  SUBCASE("wrong pin names the fingerprint it saw") {
    TlsClientConfig config;
    config.pin = "sha256:" + std::string(64, '0');
    TlsClientContext client_context(config, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe() ==
          "the certificate does not match --tls-pin (its fingerprint is " + fingerprint + ")");
  }
  SUBCASE("without a pin a self-signed certificate is refused, and the two ways out named") {
    TlsClientContext client_context(client_config(), "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(client_done.status == IoResult::Status::failed);
    CHECK(client_done.describe().find(fingerprint) != std::string::npos);
    CHECK(
        client_done.describe().ends_with("; trust its CA with --tls-ca FILE, or pin it with "
                                         "--tls-pin " +
                                         key_pin));
  }
}

TEST_CASE("tls: --tls-pin takes what openssl and curl print") {
  mux::Fingerprint bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::uint8_t>(i * 7 + 1);
  std::string colons = mux::format_fingerprint(bytes).substr(7);
  mux::Pin certificate{mux::Pin::Kind::certificate, bytes};
  CHECK(mux::parse_pin("sha256 Fingerprint=" + colons) == certificate);  // openssl 3
  CHECK(mux::parse_pin("SHA256 Fingerprint=" + colons) == certificate);  // openssl 1.1
  CHECK(mux::parse_pin(colons) == certificate);
  CHECK(mux::parse_pin("sha256:" + colons) == certificate);
  std::string key_pin = mux::format_key_pin(bytes);
  CHECK(key_pin == "sha256//AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09o=");
  mux::Pin key{mux::Pin::Kind::public_key, bytes};
  CHECK(mux::parse_pin(key_pin) == key);
  CHECK(mux::parse_pin(key_pin.substr(0, key_pin.size() - 1)) == key);
  CHECK_FALSE(mux::parse_pin("sha256//" + colons));
  CHECK_FALSE(mux::parse_pin("sha256//_w" + std::string(41, 'A')));  // curl's base64 is standard
  CHECK_FALSE(mux::parse_pin("sha1 Fingerprint=" + colons));
  CHECK_FALSE(mux::parse_pin("Fingerprint=" + colons));
}

TEST_CASE("tls: fingerprints parse as hex with or without colons and as base64") {
  mux::Fingerprint bytes{};
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::uint8_t>(i * 7 + 1);
  std::string printed = mux::format_fingerprint(bytes);
  CHECK(printed.substr(0, 15) == "sha256:01:08:0F");
  CHECK(mux::parse_fingerprint(printed) == bytes);
  std::string bare = printed;
  std::erase(bare, ':');
  CHECK(mux::parse_fingerprint("sha256:" + bare.substr(6)) == bytes);
  CHECK(mux::parse_fingerprint("SHA256:" + bare.substr(6)) == bytes);
  // base64 of 01 08 0f 16 ... (python: base64.b64encode(bytes(i*7+1 for i in range(32))))
  CHECK(mux::parse_fingerprint("sha256:AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09o=") == bytes);
  CHECK(mux::parse_fingerprint("sha256:AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09o") == bytes);
  CHECK_FALSE(mux::parse_fingerprint("sha1:" + bare.substr(6)));
  CHECK_FALSE(mux::parse_fingerprint("sha256:" + bare.substr(8)));  // too short
  CHECK_FALSE(mux::parse_fingerprint("sha256:zz" + bare.substr(8)));
  CHECK_FALSE(mux::parse_fingerprint("sha256:"));
  CHECK_FALSE(mux::parse_fingerprint(""));
  // Colons only between the pairs, all 31 of them, one each.
  std::string lower = printed.substr(7);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) { return std::tolower(c); });
  CHECK(mux::parse_fingerprint("sha256:" + lower) == bytes);
  CHECK_FALSE(mux::parse_fingerprint(printed + ":"));
  CHECK_FALSE(mux::parse_fingerprint("sha256::" + printed.substr(7)));
  CHECK_FALSE(mux::parse_fingerprint("sha256:" + bare.substr(6, 2) + "::" + bare.substr(8)));
  CHECK_FALSE(mux::parse_fingerprint("sha256:0:1" + printed.substr(9)));  // a colon inside a pair
  // base64: one '=' at most, one alphabet, and the 2 spare bits of the last digit zero.
  CHECK(mux::parse_fingerprint("sha256:_w" + std::string(41, 'A')) ==
        mux::parse_fingerprint("sha256:/w" + std::string(41, 'A') + "="));
  CHECK_FALSE(mux::parse_fingerprint("sha256:AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09o=="));
  CHECK_FALSE(mux::parse_fingerprint("sha256:AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09p"));
  CHECK_FALSE(mux::parse_fingerprint("sha256:+_" + std::string(41, 'A')));
}

TEST_CASE("tls: a plaintext peer on either side is named as such") {
  SUBCASE("a plaintext client on a TLS server") {
    TlsServerContext server_context(server_config());
    SocketPair sockets = make_socket_pair();
    auto server = server_context.make_stream(sockets.server.get());
    std::string hello = "hello, I am a chat line\n";
    REQUIRE(::write(sockets.client.get(), hello.data(), hello.size()) ==
            static_cast<ssize_t>(hello.size()));
    IoResult result = server->handshake();
    REQUIRE(result.status == IoResult::Status::failed);
    CHECK(result.describe() ==
          "the peer does not speak TLS (a plaintext client; told it to connect with --tls)");
    // It was told so in one plaintext line it can read.
    char told[128] = {};
    ssize_t got = ::read(sockets.client.get(), told, sizeof told);
    CHECK(std::string(told, got > 0 ? static_cast<std::size_t>(got) : 0) ==
          "mux: this port speaks TLS; connect with --tls\n");
  }
  SUBCASE("a TLS client on a plaintext server") {
    TlsClientContext client_context(client_config(), "localhost");
    SocketPair sockets = make_socket_pair();
    auto client = client_context.make_stream(sockets.client.get());
    CHECK(client->handshake().blocked());
    std::string welcome = "* welcome to mux chat\n";
    REQUIRE(::write(sockets.server.get(), welcome.data(), welcome.size()) ==
            static_cast<ssize_t>(welcome.size()));
    IoResult result = client->handshake();
    REQUIRE(result.status == IoResult::Status::failed);
    CHECK(result.describe() == "the peer does not speak TLS (a plaintext port or client?)");
  }
  SUBCASE("a peer that closes mid-handshake") {
    TlsClientContext client_context(client_config(), "localhost");
    SocketPair sockets = make_socket_pair();
    auto client = client_context.make_stream(sockets.client.get());
    CHECK(client->handshake().blocked());
    sockets.server.reset();
    IoResult result = client->handshake();
    REQUIRE(result.status == IoResult::Status::failed);
    CHECK(result.describe().rfind("the peer closed the connection during the TLS handshake", 0) ==
          0);
  }
}

TEST_CASE("tls: mutual TLS needs a client certificate signed by --tls-client-ca") {
  TlsServerConfig config = server_config();
  config.client_ca_file = pki().ca();
  TlsServerContext server_context(config);

  SUBCASE("with one") {
    TlsClientConfig client = client_config();
    client.cert_file = pki().path("client.pem");
    client.key_file = pki().path("client.key");
    TlsClientContext client_context(client, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    CHECK(server_done.ok());
    CHECK(client_done.ok());
  }
  SUBCASE("without one: the server says so, the client learns it at once or on first read") {
    TlsClientContext client_context(client_config(), "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(server_done.status == IoResult::Status::failed);
    CHECK(server_done.describe() ==
          "the client sent no certificate (--tls-client-ca requires one)");
    IoResult client_error = client_done;
    if (client_done.ok()) {  // TLS 1.3: the client finished before the server looked
      char byte;
      client_error = pair.client->read(&byte, 1);
    }
    REQUIRE(client_error.status == IoResult::Status::failed);
    CHECK(client_error.describe() ==
          "the server requires a client certificate (--tls-cert and --tls-key)");
  }
  SUBCASE("with one from another CA") {
    TlsClientConfig client = client_config();
    client.cert_file = pki().path("selfsigned.pem");
    client.key_file = pki().path("selfsigned.key");
    TlsClientContext client_context(client, "localhost");
    TlsPair pair = connect_pair(server_context, client_context);
    auto [server_done, client_done] = run_handshakes(*pair.server, *pair.client);
    REQUIRE(server_done.status == IoResult::Status::failed);
    CHECK(server_done.describe().find("not signed by a trusted CA") != std::string::npos);
  }
}

TEST_CASE("tls: file errors name the flag and the file") {
  auto message = [](auto&& build) -> std::string {
    try {
      build();
    } catch (const mux::TlsConfigError& error) {
      return error.what();
    }
    return "no error";
  };
  std::string missing = pki().path("missing.pem");
  CHECK(message([&] {
          TlsServerContext({missing, pki().path("server.key"), "", ""});
        }) == "--tls-cert " + missing + ": No such file or directory");
  CHECK(message([&] {
          TlsServerContext({pki().path("server.pem"), pki().path("client.key"), "", ""});
        }) == "--tls-key " + pki().path("client.key") + ": does not match the certificate in " +
                  pki().path("server.pem"));
  CHECK(message([&] {
          TlsServerContext({pki().path("server.key"), pki().path("server.key"), "", ""});
        }) == "--tls-cert " + pki().path("server.key") +
                  ": no PEM data found (expected a -----BEGIN line)");
  CHECK(message([&] {
          TlsServerContext({pki().path("server.pem"), pki().path("server.key"), missing, ""});
        }) == "--tls-client-ca " + missing + ": No such file or directory");
  TlsClientConfig bad_pin;
  bad_pin.pin = "sha256:1234";
  CHECK(message([&] {
          TlsClientContext(bad_pin, "localhost");
        }).rfind("--tls-pin sha256:1234: ", 0) == 0);
  TlsClientConfig half;
  half.cert_file = pki().path("client.pem");
  CHECK(message([&] { TlsClientContext(half, "localhost"); }) ==
        "--tls-cert and --tls-key: a client certificate needs both");
}

TEST_CASE("tls: reload swaps the certificate for new connections; a bad file keeps the old one") {
  std::string cert = pki().path("reload.pem");
  std::string key = pki().path("reload.key");
  std::filesystem::copy_file(pki().path("server.pem"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(pki().path("server.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  TlsServerContext server_context({cert, key, "", ""});
  TlsClientContext client_context(client_config(), "localhost");
  TlsPair before = connect_pair(server_context, client_context);
  auto [before_server, before_client] = run_handshakes(*before.server, *before.client);
  REQUIRE(before_client.ok());
  std::string old_fingerprint = before.client->peer_fingerprint();

  // A broken file: reload reports it and changes nothing.
  std::filesystem::copy_file(pki().path("server2.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  CHECK(server_context.reload() ==
        "--tls-key " + key + ": does not match the certificate in " + cert);
  TlsPair still_old = connect_pair(server_context, client_context);
  auto [old_server, old_client] = run_handshakes(*still_old.server, *still_old.client);
  REQUIRE(old_client.ok());
  CHECK(still_old.client->peer_fingerprint() == old_fingerprint);

  std::filesystem::copy_file(pki().path("server2.pem"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  CHECK(server_context.reload().empty());
  TlsPair after = connect_pair(server_context, client_context);
  auto [after_server, after_client] = run_handshakes(*after.server, *after.client);
  REQUIRE(after_client.ok());
  CHECK(after.client->peer_fingerprint() != old_fingerprint);

  // The connection made before the reload still works.
  mux::OutputQueue queue;
  queue.push("still here\n");
  CHECK(transfer(*before.client, queue, *before.server, 11) == "still here\n");
}
