#include "core/tls/own_certificate.hpp"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <new>
#include <system_error>

#include <fmt/format.h>

#include "core/loop/fd.hpp"
#include "core/tls/openssl_text.hpp"

namespace mux {
namespace {

// A kept key is read without a prompt: one that asks for a passphrase is not ours, and a new
// pair is made instead.
int refuse_passphrase_silently(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* /*unused*/) {
  return -1;
}

// Valid for a year, for the loopback names (so --tls-ca on the certificate works on this machine
// too); clients far away pin it.
constexpr long kOwnCertificateDays = 365;
// A kept certificate this close to its end is made anew (its key pin stays: the key is kept).
constexpr long kOwnCertificateRenewDays = 30;

UniqueX509 self_sign(EVP_PKEY* key) {
  UniqueX509 certificate(X509_new());
  if (!certificate) throw std::bad_alloc();
  X509* cert = certificate.get();
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1)
    throw TlsConfigError("--tls: no random serial number: " + openssl_reason());
  serial[0] &= 0x7F;  // a positive number
  std::unique_ptr<BIGNUM, decltype(&BN_free)> number(BN_bin2bn(serial, sizeof serial, nullptr),
                                                     BN_free);
  bool made = number && BN_to_ASN1_INTEGER(number.get(), X509_get_serialNumber(cert)) != nullptr &&
              X509_set_version(cert, X509_VERSION_3) == 1 &&
              X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != nullptr &&
              X509_gmtime_adj(X509_getm_notAfter(cert), kOwnCertificateDays * 24 * 3600) != nullptr;
  X509_NAME* name = X509_get_subject_name(cert);
  static constexpr unsigned char kCommonName[] = "mux self-signed";
  made = made &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, kCommonName, -1, -1, 0) == 1 &&
         X509_set_issuer_name(cert, name) == 1 && X509_set_pubkey(cert, key) == 1;
  if (made) {
    X509V3_CTX names;
    X509V3_set_ctx_nodb(&names);
    X509V3_set_ctx(&names, cert, cert, nullptr, nullptr, 0);
    X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &names, NID_subject_alt_name,
                                                    "DNS:localhost,IP:127.0.0.1,IP:::1");
    made = extension != nullptr && X509_add_ext(cert, extension, -1) == 1;
    X509_EXTENSION_free(extension);
  }
  if (!made || X509_sign(cert, key, EVP_sha256()) <= 0)
    throw TlsConfigError("--tls: cannot make a certificate: " + openssl_reason());
  return certificate;
}

std::string pem_of_key(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw TlsConfigError("--tls: " + openssl_reason());
  return bio_text(bio.get());
}

std::string pem_of_certificate(X509* certificate) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1)
    throw TlsConfigError("--tls: " + openssl_reason());
  return bio_text(bio.get());
}

// Written whole under a temporary name and renamed, so a crash never leaves half a key; the key
// is created mode 600.
void write_file_atomically(const std::string& path, const std::string& text, mode_t mode) {
  std::string temporary = path + ".tmp";
  Fd file(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  auto fail = [&path] {
    throw TlsConfigError(
        fmt::format("--tls-cert-cache {}: {}", path, std::generic_category().message(errno)));
  };
  if (!file) fail();
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t wrote = ::write(file.get(), text.data() + done, text.size() - done);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) fail();
    done += static_cast<std::size_t>(wrote);
  }
  if (::fsync(file.get()) != 0 || ::rename(temporary.c_str(), path.c_str()) != 0) fail();
}

// The kept pair, when both files are there, belong together and the certificate is not near
// its end; otherwise nothing (the caller makes a new certificate, reusing a kept key).
struct KeptPair {
  UniquePkey key;
  UniqueX509 certificate;
};

// A kept key others can read (or write) is refused, as ssh refuses such an identity file: it may
// have leaked, and a server that quietly kept using it would hide that from the operator.
void refuse_exposed_key(const std::string& key_path) {
  struct stat status {};
  if (::stat(key_path.c_str(), &status) != 0) return;  // none kept yet: one is made
  if ((status.st_mode & 077) == 0 && status.st_uid == ::geteuid()) return;
  throw TlsConfigError(fmt::format(
      "--tls-cert-cache {}: {} (mode {:03o}, owner uid {}); the key must be the server user's "
      "alone: chmod 600 it, or delete it to make a new one",
      key_path, (status.st_mode & 077) != 0 ? "open to group or others" : "owned by another user",
      status.st_mode & 0777, status.st_uid));
}

KeptPair read_kept_pair(const std::string& key_path, const std::string& cert_path) {
  refuse_exposed_key(key_path);
  KeptPair kept;
  std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(BIO_new_file(key_path.c_str(), "r"), BIO_free);
  if (key_bio) {
    kept.key.reset(
        PEM_read_bio_PrivateKey(key_bio.get(), nullptr, refuse_passphrase_silently, nullptr));
  }
  std::unique_ptr<BIO, decltype(&BIO_free)> cert_bio(BIO_new_file(cert_path.c_str(), "r"),
                                                     BIO_free);
  if (cert_bio)
    kept.certificate.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (kept.certificate) {
    time_t renew_after = ::time(nullptr) + kOwnCertificateRenewDays * 24 * 3600;
    bool fresh = X509_cmp_time(X509_get0_notAfter(kept.certificate.get()), &renew_after) > 0;
    bool matches = kept.key && X509_check_private_key(kept.certificate.get(), kept.key.get()) == 1;
    ERR_clear_error();
    if (!fresh || !matches) kept.certificate.reset();
  }
  return kept;
}

}  // namespace

OwnCertificate make_own_certificate(const std::string& cache_dir) {
  OwnCertificate own;
  const std::string& dir = cache_dir;
  std::string key_path = dir + "/mux-tls.key";
  std::string cert_path = dir + "/mux-tls.pem";
  if (!dir.empty()) {
    // Made with its parents (~/.cache/mux on a fresh account); only its own mode matters.
    std::error_code made;
    if (std::filesystem::create_directories(dir, made))
      std::filesystem::permissions(dir, std::filesystem::perms::owner_all, made);
    if (made) throw TlsConfigError(fmt::format("--tls-cert-cache {}: {}", dir, made.message()));
    KeptPair kept = read_kept_pair(key_path, cert_path);
    own.key = std::move(kept.key);
    own.certificate = std::move(kept.certificate);
    if (own.certificate) {
      own.origin = fmt::format("self-signed, kept in {}", dir);
      return own;
    }
  }
  bool key_kept = own.key != nullptr;
  if (!own.key) {
    own.key.reset(EVP_EC_gen("P-256"));
    if (!own.key) throw TlsConfigError("--tls: cannot make a key: " + openssl_reason());
  }
  own.certificate = self_sign(own.key.get());
  if (dir.empty()) {
    own.origin = "self-signed, made at start for this run; --tls-cert-cache DIR keeps it";
    return own;
  }
  if (!key_kept) write_file_atomically(key_path, pem_of_key(own.key.get()), 0600);
  write_file_atomically(cert_path, pem_of_certificate(own.certificate.get()), 0644);
  own.origin = fmt::format("self-signed, made at start{} and kept in {}",
                           key_kept ? " (with the kept key)" : "", dir);
  return own;
}

}  // namespace mux
