#include "core/tls/tls_stream.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

namespace mux {

void SslDeleter::operator()(ssl_st* ssl) const noexcept {
  SSL_free(ssl);
}

namespace {

// A socket BIO that sends with MSG_NOSIGNAL: a peer that resets mid-record must be an EPIPE for
// this connection, never a SIGPIPE for the process (clients and tests do not all ignore SIGPIPE).
// It also leaves the fd alone on free: the Connection owns the socket.
struct SocketBioState {
  int fd = -1;
  bool end_of_input = false;
};

SocketBioState* bio_state(BIO* bio) {
  return static_cast<SocketBioState*>(BIO_get_data(bio));
}

int bio_write(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  for (;;) {
    ssize_t sent = ::send(bio_state(bio)->fd, data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
    if (sent >= 0) return static_cast<int>(sent);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return -1;
  }
}

int bio_read(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  SocketBioState* state = bio_state(bio);
  for (;;) {
    ssize_t got = ::recv(state->fd, data, static_cast<std::size_t>(size), 0);
    if (got > 0) return static_cast<int>(got);
    if (got == 0) {
      state->end_of_input = true;  // BIO_eof() tells OpenSSL this was a clean TCP end
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
    return -1;
  }
}

long bio_ctrl(BIO* bio, int command, long /*number*/, void* /*pointer*/) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return bio_state(bio)->end_of_input ? 1 : 0;
    default:
      return 0;
  }
}

int bio_create(BIO* bio) {
  BIO_set_data(bio, nullptr);
  return 1;
}

int bio_destroy(BIO* bio) {
  delete bio_state(bio);  // owned by the BIO; allocated in make_socket_bio
  BIO_set_data(bio, nullptr);
  return 1;
}

const BIO_METHOD* socket_bio_method() {
  // Built once and never changed: immutable shared state, safe across threads and fork.
  static BIO_METHOD* method = [] {
    BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "mux socket");
    BIO_meth_set_write(made, bio_write);
    BIO_meth_set_read(made, bio_read);
    BIO_meth_set_ctrl(made, bio_ctrl);
    BIO_meth_set_create(made, bio_create);
    BIO_meth_set_destroy(made, bio_destroy);
    return made;
  }();
  return method;
}

BIO* make_socket_bio(int fd) {
  BIO* bio = BIO_new(socket_bio_method());
  if (bio == nullptr) return nullptr;
  BIO_set_data(bio, new SocketBioState{fd, false});  // NOLINT: freed by bio_destroy
  BIO_set_init(bio, 1);
  return bio;
}

bool is_plaintext_peer(unsigned long error) {
  if (ERR_GET_LIB(error) != ERR_LIB_SSL) return false;
  switch (ERR_GET_REASON(error)) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
      return true;
    default:
      return false;
  }
}

std::string describe_verify_error(SSL* ssl, long result, const std::string& fingerprint,
                                  const std::string& key_pin) {
  const char* host = X509_VERIFY_PARAM_get0_host(SSL_get0_param(ssl), 0);
  std::string name = host != nullptr ? host : "";
  std::string seen =
      fingerprint.empty() ? "" : fmt::format(" (its fingerprint is {})", fingerprint);
  // Both ways to trust a certificate no CA vouches for, the key pin first: it survives renewals.
  std::string ways_out = fmt::format(
      "; trust its CA with --tls-ca FILE, or pin it with --tls-pin {}",
      key_pin.empty() ? fingerprint.empty() ? std::string("sha256//BASE64") : fingerprint
                      : key_pin);
  switch (result) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return "the peer's certificate has expired";
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return "the peer's certificate is not valid yet";
    case X509_V_ERR_HOSTNAME_MISMATCH:
      return fmt::format("the certificate is not for host name '{}'{}", name, seen);
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return fmt::format("the certificate is not for this IP address{}", seen);
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return fmt::format("the certificate is not signed by a trusted CA ({}){}{}",
                         X509_verify_cert_error_string(result), seen, ways_out);
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return fmt::format("the certificate does not match --tls-pin{}", seen);
    default:
      return fmt::format("certificate verification failed: {}{}",
                         X509_verify_cert_error_string(result), seen);
  }
}

}  // namespace

TlsStream::TlsStream(int fd, UniqueSsl ssl, std::optional<Pin> pin)
    : ssl_(std::move(ssl)), fd_(fd), pin_(pin) {
  BIO* bio = make_socket_bio(fd);
  if (bio == nullptr) throw std::bad_alloc();
  SSL_set_bio(ssl_.get(), bio, bio);  // the SSL now owns the BIO (one reference for both sides)
  SSL_set_app_data(ssl_.get(), this);
  SSL_set_info_callback(ssl_.get(), [](const SSL* ssl, int where, int alert) {
    if ((where & SSL_CB_READ_ALERT) != 0 && (alert & 0xff) == SSL_AD_CLOSE_NOTIFY)
      static_cast<TlsStream*>(SSL_get_app_data(ssl))->close_notify_received_ = true;
  });
  // A server waits for the ClientHello; a client's first handshake() writes its hello.
  wants_ = SSL_is_server(ssl_.get()) ? EPOLLIN : EPOLLOUT;
}

TlsStream::~TlsStream() = default;

void TlsStream::renumber(int fd) noexcept {
  fd_ = fd;
  // The socket BIO keeps no bytes of its own (OpenSSL's record buffers are in the SSL object):
  // pointing it at the new number is all a move takes.
  if (BIO* bio = SSL_get_rbio(ssl_.get()); bio != nullptr) bio_state(bio)->fd = fd;
}

std::optional<IoResult> TlsStream::refuse_plaintext_client() {
  unsigned char first = 0;
  ssize_t got = ::recv(fd_, &first, 1, MSG_PEEK);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    wants_ = EPOLLIN;
    return IoResult::blocked_on();
  }
  first_byte_seen_ = true;
  // 0x16 opens a TLS handshake record; a set high bit, an SSLv2-style hello. The end of input or
  // an error is OpenSSL's to report.
  if (got != 1 || first == 0x16 || (first & 0x80) != 0) return std::nullopt;
  // One attempt, never blocking: the socket is fresh, so the line fits in its buffer. What the
  // client already sent is read away, so the close that follows is a FIN the line arrives
  // before, not a reset that could destroy it.
  (void)::send(fd_, kTlsPortHint.data(), kTlsPortHint.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  char discard[4096];
  for (int reads = 0; reads < 4; ++reads) {
    if (::recv(fd_, discard, sizeof discard, MSG_DONTWAIT) <= 0) break;
  }
  return IoResult::failure(EPROTO,
                           fmt::format("{}; told it to connect with --tls)", kPlaintextClient));
}

IoResult TlsStream::handshake() {
  if (handshake_done_) return IoResult::moved(0);
  if (!first_byte_seen_ && SSL_is_server(ssl_.get())) {
    if (std::optional<IoResult> refused = refuse_plaintext_client()) return *refused;
  }
  ERR_clear_error();
  errno = 0;
  int ret = SSL_do_handshake(ssl_.get());
  if (ret == 1) {
    handshake_done_ = true;
    wants_ = EPOLLIN;
    return IoResult::moved(0);
  }
  return blocked_or_failed(ret, true);
}

IoResult TlsStream::read(char* data, std::size_t size) {
  if (deferred_failure_) return *deferred_failure_;
  // Drain record after record into the caller's buffer: one SSL_read returns at most one record
  // (16 KiB), and an upload reads into a much larger buffer.
  std::size_t total = 0;
  while (total < size) {
    ERR_clear_error();
    errno = 0;
    std::size_t got = 0;
    int ret = SSL_read_ex(ssl_.get(), data + total, size - total, &got);
    if (ret == 1) {
      total += got;
      continue;
    }
    int ssl_error = SSL_get_error(ssl_.get(), ret);
    if (ssl_error == SSL_ERROR_ZERO_RETURN) {
      // close_notify (or a bare FIN: SSL_OP_IGNORE_UNEXPECTED_EOF): report what came first.
      // The end is kept for the next read, and has_buffered_input() says so: the socket will
      // not become readable again for it (the close_notify was already read, maybe the FIN too).
      if (total == 0) return IoResult::end();
      deferred_failure_ = IoResult::end();
      return IoResult::moved(total);
    }
    IoResult result = blocked_or_failed(ret, false);
    if (total == 0) return result;
    if (!result.blocked()) deferred_failure_ = std::move(result);
    return IoResult::moved(total);
  }
  return IoResult::moved(total);
}

IoResult TlsStream::writev(const iovec* chunks, int count) {
  std::size_t total = 0;
  int index = 0;
  std::size_t offset = 0;  // into chunks[index]
  auto skip_empty = [&] {
    while (index < count && offset == chunks[index].iov_len) {
      ++index;
      offset = 0;
    }
  };
  skip_empty();
  while (index < count) {
    // A retried write must offer OpenSSL the same bytes it blocked on (at least as many).
    std::size_t want = pending_write_ > 0 ? pending_write_ : kRecordSize;
    const char* record = nullptr;
    std::size_t record_size = 0;
    std::size_t in_chunk = chunks[index].iov_len - offset;
    if (in_chunk >= want || index + 1 == count) {
      record = static_cast<const char*>(chunks[index].iov_base) + offset;
      record_size = std::min(in_chunk, want);
    } else {
      staging_.clear();
      int gather_index = index;
      std::size_t gather_offset = offset;
      while (gather_index < count && staging_.size() < want) {
        std::size_t take =
            std::min(chunks[gather_index].iov_len - gather_offset, want - staging_.size());
        staging_.append(static_cast<const char*>(chunks[gather_index].iov_base) + gather_offset,
                        take);
        gather_offset += take;
        if (gather_offset == chunks[gather_index].iov_len) {
          ++gather_index;
          gather_offset = 0;
        }
      }
      record = staging_.data();
      record_size = staging_.size();
    }
    ERR_clear_error();
    errno = 0;
    std::size_t written = 0;
    int ret = SSL_write_ex(ssl_.get(), record, record_size, &written);
    if (ret != 1) {
      IoResult result = blocked_or_failed(ret, false);
      if (result.blocked()) {
        pending_write_ = record_size;
        return total > 0 ? IoResult::moved(total) : result;
      }
      return result;
    }
    pending_write_ = 0;
    total += written;
    // Advance past `written` bytes of the caller's chunks.
    while (written > 0) {
      std::size_t step = std::min(written, chunks[index].iov_len - offset);
      offset += step;
      written -= step;
      skip_empty();
    }
    skip_empty();
  }
  return IoResult::moved(total);
}

IoResult TlsStream::shutdown_write() {
  if (!handshake_done_) {
    // No session to close: just end the TCP stream (a refused or timed-out handshake).
    if (::shutdown(fd_, SHUT_WR) == 0 || errno == ENOTCONN) return IoResult::moved(0);
    return IoResult::failure(errno);
  }
  if (!close_notify_sent_) {
    ERR_clear_error();
    errno = 0;
    int ret = SSL_shutdown(ssl_.get());
    // 0: our close_notify is out, the peer's not yet seen; 1: both. Either way we are done writing.
    if (ret < 0) {
      int ssl_error = SSL_get_error(ssl_.get(), ret);
      if (ssl_error == SSL_ERROR_WANT_WRITE || ssl_error == SSL_ERROR_WANT_READ)
        return blocked_or_failed(ret, false);
      // The peer is gone already (reset, or it closed first): nothing left to tell it.
      ERR_clear_error();
    }
    close_notify_sent_ = true;
  }
  // Then the FIN, so peers that read to TCP end (ncat --recv-only, socat) see the end too.
  if (::shutdown(fd_, SHUT_WR) == 0 || errno == ENOTCONN) return IoResult::moved(0);
  return IoResult::failure(errno);
}

bool TlsStream::has_buffered_input() const {
  return deferred_failure_.has_value() || SSL_has_pending(ssl_.get()) == 1;
}

std::string TlsStream::describe_session() const {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_.get());
  return fmt::format("{} {}", SSL_get_version(ssl_.get()),
                     cipher != nullptr ? SSL_CIPHER_get_name(cipher) : "(none)");
}

void TlsStream::note_peer_pins(const Fingerprint& certificate,
                               const std::optional<Fingerprint>& key) {
  peer_fingerprint_ = format_fingerprint(certificate);
  peer_key_pin_ = key ? format_key_pin(*key) : std::string();
}

IoResult TlsStream::blocked_or_failed(int ret, bool in_handshake) {
  int saved_errno = errno;
  int ssl_error = SSL_get_error(ssl_.get(), ret);
  switch (ssl_error) {
    case SSL_ERROR_WANT_READ:
      wants_ = EPOLLIN;
      return IoResult::blocked_on();
    case SSL_ERROR_WANT_WRITE:
      wants_ = EPOLLOUT;
      return IoResult::blocked_on();
    default:
      break;
  }
  int error = saved_errno != 0 ? saved_errno : EPROTO;
  if (ssl_error == SSL_ERROR_SYSCALL && saved_errno == 0) error = ECONNRESET;
  std::string detail = describe_failure(ssl_error, saved_errno, in_handshake);
  ERR_clear_error();
  return IoResult::failure(error, std::move(detail));
}

std::string TlsStream::describe_failure(int ssl_error, int saved_errno, bool in_handshake) {
  if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    // A reset during the handshake is how servers refuse (admission, a plaintext port that
    // closed on our hello), so it reads as a close, with the system's word in brackets.
    std::string reason = saved_errno != 0
                             ? " (" + std::generic_category().message(saved_errno) + ")"
                             : std::string();
    if (in_handshake) return "the peer closed the connection during the TLS handshake" + reason;
    if (saved_errno != 0) return std::generic_category().message(saved_errno);
    return "the peer closed the connection";
  }
  unsigned long error = ERR_peek_last_error();
  long verify = SSL_get_verify_result(ssl_.get());
  if (verify != X509_V_OK && in_handshake && SSL_get_verify_mode(ssl_.get()) != SSL_VERIFY_NONE)
    return describe_verify_error(ssl_.get(), verify, peer_fingerprint_, peer_key_pin_);
  if (is_plaintext_peer(error)) return "the peer does not speak TLS (a plaintext port or client?)";
  if (ERR_GET_LIB(error) == ERR_LIB_SSL) {
    switch (ERR_GET_REASON(error)) {
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
      case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        if (!SSL_is_server(ssl_.get()) && SSL_get_certificate(ssl_.get()) == nullptr)
          return "the server requires a client certificate (--tls-cert and --tls-key)";
        break;
      case SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE:
        // What a plaintext mux upload-server answers to a ClientHello.
        if (!SSL_is_server(ssl_.get()) && in_handshake)
          return "the server answered the TLS hello with an 'unexpected message' alert (a "
                 "plaintext port? connect without --tls)";
        break;
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return "the client sent no certificate (--tls-client-ca requires one)";
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return describe_verify_error(ssl_.get(), verify, peer_fingerprint_, peer_key_pin_);
      default:
        break;
    }
  }
  const char* reason = ERR_reason_error_string(error);
  if (reason == nullptr) return in_handshake ? "TLS handshake failed" : "TLS error";
  return in_handshake ? fmt::format("TLS handshake failed: {}", reason)
                      : fmt::format("TLS error: {}", reason);
}

IoResult complete_handshake(ByteStream& stream, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    IoResult result = stream.handshake();
    if (!result.blocked()) return result;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return IoResult::failure(ETIMEDOUT, "the TLS handshake timed out");
    pollfd entry{stream.fd(), 0, 0};
    if (stream.wants() & EPOLLIN) entry.events |= POLLIN;
    if (stream.wants() & EPOLLOUT) entry.events |= POLLOUT;
    int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return IoResult::failure(errno);
  }
}

}  // namespace mux
