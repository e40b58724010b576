// The key and self-signed certificate of a server started with --tls but no --tls-cert: a P-256
// key and a certificate for the loopback names, valid for a year, which clients far away pin
// (--tls-pin). With --tls-cert-cache DIR the pair is kept there (the key mode 600, written whole
// and renamed) and read back at the next start, so the pin survives restarts; a kept certificate
// near its end is made anew with the kept key, and a kept key others can read is refused.
// Made once by TlsServerContext (core/tls/tls_context.hpp), which keeps it across SIGHUP reloads.
#pragma once

#include <string>

#include "core/tls/tls_context.hpp"

namespace mux {

struct OwnCertificate {
  UniquePkey key;
  UniqueX509 certificate;
  // For the start-up log line: "self-signed, kept in DIR", "self-signed, made at start ...".
  std::string origin;
};

// Reads the pair kept in `cache_dir`, or makes one (and keeps it there unless `cache_dir` is
// empty). Throws TlsConfigError naming --tls or --tls-cert-cache.
OwnCertificate make_own_certificate(const std::string& cache_dir);

}  // namespace mux
