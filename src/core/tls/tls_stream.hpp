// TlsStream: a ByteStream that speaks TLS (OpenSSL 3) over a non-blocking socket. It owns one SSL
// object (configured by TlsServerContext or TlsClientContext in core/tls/tls_context.hpp, which are
// the only callers that construct it); the Connection that owns the stream owns the socket. Every
// call returns would_block instead of waiting and wants() names the readiness OpenSSL asked for, so
// the handshake and renegotiation-free record traffic are driven by the event loop like plain TCP.
//
// Writes are cut into records of at most 16 KiB: a large chunk is handed to OpenSSL in place,
// small chunks (chat lines) are gathered into one record, so a writev of 200 short lines costs one
// record, not 200. After would_block the caller must offer the same leading bytes again
// (OutputQueue does: it only consumes what was reported written), which is what TLS requires of a
// retried write.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/loop/byte_stream.hpp"
#include "core/tls/tls_pin.hpp"

struct ssl_st;

namespace mux {

struct SslDeleter {
  void operator()(ssl_st* ssl) const noexcept;
};
using UniqueSsl = std::unique_ptr<ssl_st, SslDeleter>;

// What a TLS server answers, in plaintext, to a client whose first byte cannot start a TLS
// record: one line a person (or a line client) can read before the connection closes.
inline constexpr std::string_view kTlsPortHint = "mux: this port speaks TLS; connect with --tls\n";
// The start of the failure a server's handshake reports then ("handshake failed: " before it).
inline constexpr std::string_view kPlaintextClient =
    "the peer does not speak TLS (a plaintext client";

class TlsStream final : public ByteStream {
 public:
  // `ssl` is already in accept or connect state; `pin`, when set, replaces chain and host name
  // verification on the client side (the context installs the callback that consults it).
  TlsStream(int fd, UniqueSsl ssl, std::optional<Pin> pin = std::nullopt);
  ~TlsStream() override;

  IoResult handshake() override;
  IoResult read(char* data, std::size_t size) override;
  IoResult writev(const iovec* chunks, int count) override;
  IoResult shutdown_write() override;
  [[nodiscard]] std::uint32_t wants() const override { return wants_; }
  [[nodiscard]] bool has_buffered_input() const override;
  [[nodiscard]] bool end_was_unmarked() const override { return !close_notify_received_; }
  [[nodiscard]] int fd() const noexcept override { return fd_; }
  void renumber(int fd) noexcept override;

  [[nodiscard]] bool handshake_done() const noexcept { return handshake_done_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384": for the log line of a new connection.
  [[nodiscard]] std::string describe_session() const;
  // The peer's certificate fingerprint as seen during verification ("" when none was offered).
  [[nodiscard]] const std::string& peer_fingerprint() const noexcept { return peer_fingerprint_; }
  // Its public-key pin, "sha256//BASE64=" ("" when none was offered).
  [[nodiscard]] const std::string& peer_key_pin() const noexcept { return peer_key_pin_; }

  // Called from the certificate verification callback (tls_context.cpp), nowhere else.
  void note_peer_pins(const Fingerprint& certificate, const std::optional<Fingerprint>& key);
  [[nodiscard]] const std::optional<Pin>& pin() const noexcept { return pin_; }

  static constexpr std::size_t kRecordSize = 16384;

 private:
  // Maps an OpenSSL return value to would_block (setting wants_) or a described failure.
  IoResult blocked_or_failed(int ret, bool in_handshake);
  // Servers, before OpenSSL reads anything: a first byte that cannot start a TLS record gets the
  // kTlsPortHint line and a failure; nullopt lets the handshake go on.
  std::optional<IoResult> refuse_plaintext_client();
  std::string describe_failure(int ssl_error, int saved_errno, bool in_handshake);

  UniqueSsl ssl_;
  int fd_;
  std::optional<Pin> pin_;
  std::string peer_fingerprint_;
  std::string peer_key_pin_;
  std::string staging_;            // small chunks gathered into one record
  std::size_t pending_write_ = 0;  // length of a write OpenSSL must see again (would_block)
  // The end or an error met after some bytes were already read: reported by the next read.
  std::optional<IoResult> deferred_failure_;
  std::uint32_t wants_;
  bool handshake_done_ = false;
  bool close_notify_sent_ = false;
  // The peer's close_notify alert arrived (seen by the info callback: OpenSSL reports a bare FIN
  // as the same clean end under SSL_OP_IGNORE_UNEXPECTED_EOF).
  bool close_notify_received_ = false;
  bool first_byte_seen_ = false;  // servers: whether the client's first byte was looked at
};

// Runs `stream.handshake()` to completion with poll(), for clients that have nothing else to do
// yet (chat-client, upload-client) and for tests. Fails with ETIMEDOUT after `timeout`.
IoResult complete_handshake(ByteStream& stream, std::chrono::milliseconds timeout);

}  // namespace mux
