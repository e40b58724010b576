// ClientLink: how chat-client and upload-client reach their server — the connect with a deadline
// (core's non-blocking Connector), then, with --tls, the TLS handshake under the same deadline.
// The options are filled in by cli/ from the client flags; the clients get back the socket and
// the ByteStream, wrap both in a Connection, and never see whether it is TLS. Callers:
// run_chat_client, run_upload_client.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/loop/byte_stream.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

struct ClientLinkOptions {
  // A port typed in --host ("127.0.0.1:7010", "[::1]:7010"); it wins over --port.
  std::optional<std::uint16_t> port_in_host;
  // --connect-timeout: for the TCP connect and then the TLS handshake, each.
  std::chrono::milliseconds connect_timeout{10'000};
  bool tls = false;  // --tls, or implied by any other --tls-* flag
  TlsClientConfig tls_config;
  std::string token_file;  // --token-file: the first token in it is presented

  [[nodiscard]] bool wants_tls() const noexcept {
    return tls || !tls_config.ca_file.empty() || !tls_config.cert_file.empty() ||
           !tls_config.key_file.empty() || !tls_config.server_name.empty() ||
           !tls_config.pin.empty();
  }
};

struct ClientLink {
  Fd socket;
  std::unique_ptr<ByteStream> stream;  // plain TCP or TLS, handshake done
  std::string server;                  // "127.0.0.1:5000", for messages
  std::string session;                 // "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" for plain TCP
  std::string token;                   // the first token of --token-file, or ""
};

// The port to use: the one in --host, else --port.
[[nodiscard]] std::uint16_t client_port(const ClientLinkOptions& options, std::uint16_t port);

// Reads --token-file, connects and (with TLS) completes the handshake. Throws std::runtime_error
// (TlsConfigError for a bad --tls-* file) whose message names the address and says why, for "mux:
// error: ...".
ClientLink open_client_link(const std::string& host, std::uint16_t port,
                            const ClientLinkOptions& options);

// What connecting again takes (upload-client's --retry): the address, the deadline and a stream
// for each new socket, with the TLS files loaded once. The connect runs on the caller's loop (a
// Connector) and the TLS handshake is left to the Connection that wraps the socket, so the
// caller's signals and timers are served while a reconnect is under way (Ctrl-C ends at once).
class ClientRedial {
 public:
  // Throws as open_client_link() does for a bad --tls-* file.
  ClientRedial(const std::string& host, std::uint16_t port, const ClientLinkOptions& options);

  // Starts a connect on `loop` within --connect-timeout; `done` as Connector's.
  [[nodiscard]] std::unique_ptr<Connector> connect(EventLoop& loop, Connector::Done done) const;
  // Plain TCP, or TLS whose handshake the Connection drives (within timeout()).
  [[nodiscard]] std::unique_ptr<ByteStream> make_stream(int fd) const;
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  [[nodiscard]] const std::string& server() const noexcept { return server_; }

 private:
  std::string host_;
  std::uint16_t port_;
  std::string server_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<TlsClientContext> tls_;
};

// --check: loads what open_client_link() would (the --tls-* files, --token-file) without
// connecting. Returns what was checked ("TLS files, token file"; "" when nothing); throws as
// open_client_link() does.
std::string check_client_link(const std::string& host, const ClientLinkOptions& options);

}  // namespace mux
