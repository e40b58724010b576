// TLS configuration for both ends, built from the --tls-* flags. A context owns one OpenSSL SSL_CTX
// (certificate, key, trust, verification rules) and makes a TlsStream per accepted or connected
// socket: servers hand make_stream to their Connection factory, clients call it once after
// connecting. Defaults: TLS 1.2 minimum (1.3 preferred by negotiation), no renegotiation, no
// compression, no session tickets (clients here never resume), OpenSSL buffers released while idle
// (and taken from BufferSlots, core/tls/tls_memory.hpp), TLS 1.3 servers prefer AES-128-GCM.
//
// Errors while loading files throw TlsConfigError whose message names the flag and the file,
// ready for "mux: error: ...". Callers: chat/ and upload/ servers and clients, tests.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/tls/tls_stream.hpp"

struct ssl_ctx_st;
struct evp_pkey_st;
struct x509_st;

namespace mux {

class TlsConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SslCtxDeleter {
  void operator()(ssl_ctx_st* context) const noexcept;
};
using UniqueSslCtx = std::unique_ptr<ssl_ctx_st, SslCtxDeleter>;

struct PkeyDeleter {
  void operator()(evp_pkey_st* key) const noexcept;
};
using UniquePkey = std::unique_ptr<evp_pkey_st, PkeyDeleter>;
struct X509Deleter {
  void operator()(x509_st* certificate) const noexcept;
};
using UniqueX509 = std::unique_ptr<x509_st, X509Deleter>;

struct TlsServerConfig {
  // --tls-cert: PEM, the server certificate then its chain. Empty: the server makes its own key
  // and self-signed certificate at start (--tls alone), kept in cert_cache_dir when set.
  std::string cert_file;
  std::string key_file;        // --tls-key: PEM private key, unencrypted
  std::string client_ca_file;  // --tls-client-ca: when set, clients must present a certificate
                               // signed by one of these CAs (mutual TLS)
  std::string cert_cache_dir;  // --tls-cert-cache: where a made key and certificate are kept
};

class TlsServerContext {
 public:
  explicit TlsServerContext(TlsServerConfig config);  // throws TlsConfigError

  // Reads the files again (SIGHUP). New connections get the new certificate; connections already
  // open keep the context they started with (OpenSSL counts references). On a bad file the
  // current context stays and the reason is returned; "" on success.
  std::string reload();

  // A server-side stream on the accepted socket `fd`; the handshake runs on the first handshake().
  [[nodiscard]] std::unique_ptr<TlsStream> make_stream(int fd) const;

  [[nodiscard]] const TlsServerConfig& config() const noexcept { return config_; }
  // "CN=example.org, expires 2027-11-29, sha256:..., public key sha256//...": for the start-up
  // log line; a made certificate also says where it came from and the --tls-pin to give clients.
  [[nodiscard]] std::string describe_certificate() const;

 private:
  TlsServerConfig config_;
  // Without --tls-cert: the key and self-signed certificate made (or read from the cache) at start
  // (core/tls/own_certificate.hpp); a SIGHUP keeps them.
  UniquePkey own_key_;
  UniqueX509 own_certificate_;
  std::string own_origin_;  // "made at start", "kept in DIR", ...
  UniqueSslCtx context_;
};

struct TlsClientConfig {
  std::string ca_file;    // --tls-ca: trust these CAs instead of the system store
  std::string cert_file;  // --tls-cert / --tls-key: a client certificate for mutual TLS
  std::string key_file;
  std::string server_name;  // --tls-server-name: the name to check instead of --host
  std::string pin;          // --tls-pin: accept exactly this server certificate, or this public key
};

class TlsClientContext {
 public:
  // `host` is what the client connects to (--host); the certificate must name it unless
  // --tls-server-name or --tls-pin says otherwise. Throws TlsConfigError.
  TlsClientContext(TlsClientConfig config, std::string host);

  [[nodiscard]] std::unique_ptr<TlsStream> make_stream(int fd) const;
  [[nodiscard]] const std::string& checked_name() const noexcept { return checked_name_; }

 private:
  TlsClientConfig config_;
  std::string checked_name_;
  std::optional<Pin> pin_;
  UniqueSslCtx context_;
};

}  // namespace mux
