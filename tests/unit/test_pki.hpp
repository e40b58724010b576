// Certificates for the TLS unit tests, made at run time with the OpenSSL API (no private key is
// ever committed): a CA, a server and a client certificate it signs, an expired server
// certificate, and a self-signed one. Written as PEM files into a temporary directory that is
// removed when the TestPki goes away.
#pragma once

#include <string>

namespace mux::testing {

class TestPki {
 public:
  TestPki();
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;
  ~TestPki();

  [[nodiscard]] std::string path(const std::string& name) const { return directory_ + "/" + name; }

  // Files: ca.pem; server.pem + server.key (CN/SAN localhost, 127.0.0.1); client.pem + client.key;
  // expired.pem + expired.key; selfsigned.pem + selfsigned.key; other-ca.pem (signs nothing used).
  std::string ca() const { return path("ca.pem"); }
  std::string other_ca() const { return path("other-ca.pem"); }

 private:
  std::string directory_;
};

}  // namespace mux::testing
