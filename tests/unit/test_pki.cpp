#include "test_pki.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>

namespace mux::testing {
namespace {

using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using Certificate = std::unique_ptr<X509, decltype(&X509_free)>;

Key new_key() {
  Key key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!key) throw std::runtime_error("EVP_EC_gen failed");
  return key;
}

void add_extension(X509* certificate, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, certificate, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
  if (extension == nullptr) throw std::runtime_error("X509V3_EXT_conf_nid failed");
  X509_add_ext(certificate, extension, -1);
  X509_EXTENSION_free(extension);
}

// Signed by `issuer`/`issuer_key`, or self-signed when issuer is null. Validity in days from now.
Certificate new_certificate(const char* common_name, EVP_PKEY* key, X509* issuer,
                            EVP_PKEY* issuer_key, long from_days, long to_days, bool is_ca,
                            long serial) {
  Certificate certificate(X509_new(), X509_free);
  X509_set_version(certificate.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(certificate.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(certificate.get()), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(certificate.get()), to_days * 86400);
  X509_set_pubkey(certificate.get(), key);
  X509_NAME* name = X509_get_subject_name(certificate.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : certificate.get();
  X509_set_issuer_name(certificate.get(), X509_get_subject_name(signer));
  if (is_ca) {
    add_extension(certificate.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(certificate.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(certificate.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(certificate.get(), signer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  }
  if (X509_sign(certificate.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0)
    throw std::runtime_error("X509_sign failed");
  return certificate;
}

void write_certificate(const std::string& path, X509* certificate) {
  std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "w"), std::fclose);
  if (!file || PEM_write_X509(file.get(), certificate) != 1)
    throw std::runtime_error("cannot write " + path);
}

void write_key(const std::string& path, EVP_PKEY* key) {
  std::unique_ptr<FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "w"), std::fclose);
  if (!file || PEM_write_PrivateKey(file.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw std::runtime_error("cannot write " + path);
  ::chmod(path.c_str(), 0600);
}

}  // namespace

TestPki::TestPki() {
  std::string pattern = (std::filesystem::temp_directory_path() / "mux-pki-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  directory_ = pattern;

  Key ca_key = new_key();
  Certificate ca = new_certificate("mux test CA", ca_key.get(), nullptr, nullptr, -1, 30, true, 1);
  write_certificate(path("ca.pem"), ca.get());

  Key other_key = new_key();
  Certificate other =
      new_certificate("other CA", other_key.get(), nullptr, nullptr, -1, 30, true, 2);
  write_certificate(path("other-ca.pem"), other.get());

  auto issue = [&](const std::string& name, const char* common_name, long from, long to,
                   long serial) {
    Key key = new_key();
    Certificate certificate =
        new_certificate(common_name, key.get(), ca.get(), ca_key.get(), from, to, false, serial);
    write_certificate(path(name + ".pem"), certificate.get());
    write_key(path(name + ".key"), key.get());
  };
  issue("server", "localhost", -1, 30, 10);
  issue("server2", "localhost", -1, 30, 11);
  issue("client", "mux test client", -1, 30, 12);
  issue("expired", "localhost", -30, -1, 13);

  Key self_key = new_key();
  Certificate self =
      new_certificate("localhost", self_key.get(), nullptr, nullptr, -1, 30, false, 14);
  write_certificate(path("selfsigned.pem"), self.get());
  write_key(path("selfsigned.key"), self_key.get());
}

TestPki::~TestPki() {
  std::error_code ignored;
  std::filesystem::remove_all(directory_, ignored);
}

}  // namespace mux::testing
