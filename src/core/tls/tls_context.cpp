#include "core/tls/tls_context.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cerrno>
#include <system_error>

#include <fmt/format.h>

#include "core/loop/fd.hpp"
#include "core/tls/openssl_text.hpp"
#include "core/tls/own_certificate.hpp"
#include "core/tls/tls_memory.hpp"

namespace mux {

void SslCtxDeleter::operator()(ssl_ctx_st* context) const noexcept {
  SSL_CTX_free(context);
}

void PkeyDeleter::operator()(evp_pkey_st* key) const noexcept {
  EVP_PKEY_free(key);
}

void X509Deleter::operator()(x509_st* certificate) const noexcept {
  X509_free(certificate);
}

namespace {

// Opening the file ourselves first gives "No such file or directory" instead of OpenSSL's chain.
// Opened without blocking and refused unless regular: OpenSSL's own open of a FIFO at the path
// would wait for a writer forever, freezing the server at start or on a SIGHUP reload.
void check_readable(const char* flag, const std::string& path) {
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  struct stat status {};
  if (!file || ::fstat(file.get(), &status) != 0)
    throw TlsConfigError(
        fmt::format("{} {}: {}", flag, path, std::generic_category().message(errno)));
  if (!S_ISREG(status.st_mode))
    throw TlsConfigError(fmt::format("{} {}: not a regular file", flag, path));
}

// A passphrase prompt would block a server on its terminal; encrypted keys are refused instead.
int refuse_passphrase(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

UniqueSslCtx new_context(const SSL_METHOD* method) {
  // Before the first SSL_CTX nothing in mux has made OpenSSL allocate, so the slots can still be
  // installed (see tls_memory.hpp: idle TLS connections then cost what they keep, not 19 KiB).
  (void)install_tls_buffer_slots();
  UniqueSslCtx context(SSL_CTX_new(method));
  if (!context) throw TlsConfigError("TLS: " + openssl_reason());
  SSL_CTX* ctx = context.get();
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
  // Partial writes + a moving buffer let a record go out as soon as it is sealed and let the
  // caller retry from a different address (OutputQueue's iovecs); released buffers keep an idle
  // connection at the size of its SSL object instead of ~34 KiB more.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  // Read whole socket buffers, not one record header at a time: half the read syscalls.
  SSL_CTX_set_read_ahead(ctx, 1);
  return context;
}

void load_certificate_and_key(SSL_CTX* ctx, const std::string& cert_file,
                              const std::string& key_file) {
  check_readable("--tls-cert", cert_file);
  check_readable("--tls-key", key_file);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1)
    throw TlsConfigError(fmt::format("--tls-cert {}: {}", cert_file, openssl_reason()));
  bool passphrase_asked = false;
  SSL_CTX_set_default_passwd_cb(ctx, refuse_passphrase);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, &passphrase_asked);
  int loaded = SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, nullptr);
  if (loaded != 1) {
    unsigned long error = ERR_peek_error();
    bool mismatch =
        ERR_GET_LIB(error) == ERR_LIB_X509 && ERR_GET_REASON(error) == X509_R_KEY_VALUES_MISMATCH;
    std::string why =
        passphrase_asked ? "the key is encrypted; decrypt it first (openssl pkey -in KEY -out KEY2)"
        : mismatch       ? fmt::format("does not match the certificate in {}", cert_file)
                         : openssl_reason();
    ERR_clear_error();
    throw TlsConfigError(fmt::format("--tls-key {}: {}", key_file, why));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    throw TlsConfigError(
        fmt::format("--tls-key {}: does not match the certificate in {}", key_file, cert_file));
  }
}

// With --tls-cert the files; otherwise the key and certificate the context made (own_*).
UniqueSslCtx build_server_context(const TlsServerConfig& config, EVP_PKEY* own_key,
                                  X509* own_certificate) {
  UniqueSslCtx context = new_context(TLS_server_method());
  SSL_CTX* ctx = context.get();
  // No tickets, no cache: mux clients never resume, and a cache would grow with every handshake.
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static constexpr unsigned char kSessionContext[] = "mux";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  // TLS 1.3: AES-128-GCM first, and the server's order decides (OpenSSL clients offer AES-256
  // first). As strong as this needs, ~10% faster in bulk, and its SHA-256 transcript state is
  // 200 bytes smaller than SHA-384's in every connection (10,000 idle clients: 2 MB).
  SSL_CTX_set_ciphersuites(ctx,
                           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                           "TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (own_certificate != nullptr) {
    if (SSL_CTX_use_certificate(ctx, own_certificate) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, own_key) != 1)
      throw TlsConfigError("--tls: " + openssl_reason());
  } else {
    load_certificate_and_key(ctx, config.cert_file, config.key_file);
  }
  if (!config.client_ca_file.empty()) {
    check_readable("--tls-client-ca", config.client_ca_file);
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, config.client_ca_file.c_str(), nullptr) != 1)
      throw TlsConfigError(
          fmt::format("--tls-client-ca {}: {}", config.client_ca_file, openssl_reason()));
    // Tell clients which CAs we accept, so they pick the right certificate.
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.client_ca_file.c_str());
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  ERR_clear_error();
  return context;
}

// The SHA-256 of the DER SubjectPublicKeyInfo: what curl's --pinnedpubkey sha256// names.
std::optional<Fingerprint> key_digest_of(X509* certificate) {
  EVP_PKEY* key = certificate != nullptr ? X509_get0_pubkey(certificate) : nullptr;
  if (key == nullptr) return std::nullopt;
  unsigned char* der = nullptr;
  int length = i2d_PUBKEY(key, &der);
  if (length <= 0) return std::nullopt;
  std::unique_ptr<unsigned char, void (*)(unsigned char*)> owned(
      der, [](unsigned char* bytes) { OPENSSL_free(bytes); });
  Fingerprint digest{};
  unsigned int size = 0;
  if (EVP_Digest(der, static_cast<std::size_t>(length), digest.data(), &size, EVP_sha256(),
                 nullptr) != 1 ||
      size != digest.size())
    return std::nullopt;
  return digest;
}

std::optional<Fingerprint> fingerprint_of(X509* certificate) {
  Fingerprint fingerprint{};
  unsigned int length = 0;
  if (certificate == nullptr ||
      X509_digest(certificate, EVP_sha256(), fingerprint.data(), &length) != 1 ||
      length != fingerprint.size())
    return std::nullopt;
  return fingerprint;
}

// Replaces OpenSSL's chain check on clients: remembers the server's fingerprint for error
// messages, and with --tls-pin accepts exactly that certificate instead of a CA-signed one.
int verify_server_certificate(X509_STORE_CTX* store, void* /*unused*/) {
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* stream = ssl != nullptr ? static_cast<TlsStream*>(SSL_get_app_data(ssl)) : nullptr;
  X509* certificate = X509_STORE_CTX_get0_cert(store);
  std::optional<Fingerprint> seen = fingerprint_of(certificate);
  std::optional<Fingerprint> key = key_digest_of(certificate);
  if (stream != nullptr && seen) stream->note_peer_pins(*seen, key);
  if (stream != nullptr && stream->pin()) {
    const Pin& pin = *stream->pin();
    const std::optional<Fingerprint>& compared = pin.kind == Pin::Kind::public_key ? key : seen;
    if (compared && CRYPTO_memcmp(compared->data(), pin.digest.data(), pin.digest.size()) == 0)
      return 1;
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return X509_verify_cert(store);
}

bool is_ip_literal(const std::string& host) {
  unsigned char buffer[16];
  return ::inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

}  // namespace

TlsServerContext::TlsServerContext(TlsServerConfig config) : config_(std::move(config)) {
  if (config_.cert_file.empty()) {
    OwnCertificate own = make_own_certificate(config_.cert_cache_dir);
    own_key_ = std::move(own.key);
    own_certificate_ = std::move(own.certificate);
    own_origin_ = std::move(own.origin);
  }
  context_ = build_server_context(config_, own_key_.get(), own_certificate_.get());
}

std::string TlsServerContext::reload() {
  try {
    context_ = build_server_context(config_, own_key_.get(), own_certificate_.get());
    return {};
  } catch (const TlsConfigError& error) {
    return error.what();
  }
}

std::unique_ptr<TlsStream> TlsServerContext::make_stream(int fd) const {
  UniqueSsl ssl(SSL_new(context_.get()));
  if (!ssl) throw std::bad_alloc();
  SSL_set_accept_state(ssl.get());
  return std::make_unique<TlsStream>(fd, std::move(ssl));
}

std::string TlsServerContext::describe_certificate() const {
  X509* certificate = SSL_CTX_get0_certificate(context_.get());
  if (certificate == nullptr) return "no certificate";
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio) return "?";
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253);
  BIO_puts(bio.get(), ", expires ");
  ASN1_TIME_print(bio.get(), X509_get0_notAfter(certificate));
  if (X509_cmp_current_time(X509_get0_notAfter(certificate)) < 0) BIO_puts(bio.get(), " (EXPIRED)");
  if (auto fingerprint = fingerprint_of(certificate))
    BIO_puts(bio.get(), (", " + format_fingerprint(*fingerprint)).c_str());
  std::optional<Fingerprint> key = key_digest_of(certificate);
  if (key) BIO_puts(bio.get(), (", public key " + format_key_pin(*key)).c_str());
  if (own_certificate_ && key) {
    BIO_puts(bio.get(), fmt::format(" ({}); clients connect with --tls-pin {}", own_origin_,
                                    format_key_pin(*key))
                            .c_str());
  }
  return bio_text(bio.get());
}

TlsClientContext::TlsClientContext(TlsClientConfig config, std::string host)
    : config_(std::move(config)),
      checked_name_(config_.server_name.empty() ? std::move(host) : config_.server_name),
      context_(new_context(TLS_client_method())) {
  SSL_CTX* ctx = context_.get();
  if (!config_.pin.empty()) {
    pin_ = parse_pin(config_.pin);
    if (!pin_)
      throw TlsConfigError(fmt::format("--tls-pin {}: expected {}", config_.pin, kPinForms));
  }
  if (!config_.ca_file.empty()) {
    check_readable("--tls-ca", config_.ca_file);
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, config_.ca_file.c_str(), nullptr) != 1)
      throw TlsConfigError(fmt::format("--tls-ca {}: {}", config_.ca_file, openssl_reason()));
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    throw TlsConfigError("TLS: cannot load the system trust store: " + openssl_reason());
  }
  if (!config_.cert_file.empty() || !config_.key_file.empty()) {
    if (config_.cert_file.empty() || config_.key_file.empty())
      throw TlsConfigError("--tls-cert and --tls-key: a client certificate needs both");
    load_certificate_and_key(ctx, config_.cert_file, config_.key_file);
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, verify_server_certificate, nullptr);
  ERR_clear_error();
}

std::unique_ptr<TlsStream> TlsClientContext::make_stream(int fd) const {
  UniqueSsl ssl(SSL_new(context_.get()));
  if (!ssl) throw std::bad_alloc();
  SSL_set_connect_state(ssl.get());
  if (is_ip_literal(checked_name_)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), checked_name_.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), checked_name_.c_str());  // SNI, for virtual hosts
    SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl.get(), checked_name_.c_str());
  }
  return std::make_unique<TlsStream>(fd, std::move(ssl), pin_);
}

}  // namespace mux
