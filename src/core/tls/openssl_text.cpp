#include "core/tls/openssl_text.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <fmt/format.h>

namespace mux {

std::string openssl_reason() {
  unsigned long error = ERR_get_error();
  ERR_clear_error();
  if (error == 0) return "unknown OpenSSL error";
  if (ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE)
    return "no PEM data found (expected a -----BEGIN line)";
  const char* reason = ERR_reason_error_string(error);
  return reason != nullptr ? reason : fmt::format("OpenSSL error {:#x}", error);
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return size > 0 ? std::string(data, static_cast<std::size_t>(size)) : std::string();
}

}  // namespace mux
