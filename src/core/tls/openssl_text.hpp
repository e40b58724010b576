// What OpenSSL says, as strings for our one-line errors and log lines: the reason of the error it
// queued, and the text a memory BIO gathered. Shared by the contexts (core/tls/tls_context.cpp)
// and the self-signed certificate they may make (core/tls/own_certificate.cpp).
#pragma once

#include <string>

struct bio_st;

namespace mux {

// The most specific reason OpenSSL queued (the first error is the root cause), then clears the
// queue, so the next failure is not blamed on this one.
std::string openssl_reason();

// Everything written to the memory BIO `bio` so far.
std::string bio_text(bio_st* bio);

}  // namespace mux
