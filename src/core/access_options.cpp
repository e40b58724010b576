#include "core/access_options.hpp"

namespace mux {

std::unique_ptr<TlsServerContext> make_server_tls(const ServerAccessOptions& options) {
  const TlsServerConfig& tls = options.tls;
  if (tls.cert_file.empty()) {
    if (!tls.key_file.empty() || !tls.client_ca_file.empty())
      throw TlsConfigError("--tls-key and --tls-client-ca need --tls-cert (TLS is off without it)");
    return nullptr;
  }
  if (tls.key_file.empty())
    throw TlsConfigError("--tls-cert " + tls.cert_file + ": needs --tls-key too");
  return std::make_unique<TlsServerContext>(tls);
}

AccessTokens load_server_tokens(const ServerAccessOptions& options) {
  if (options.token_file.empty()) return AccessTokens();
  return AccessTokens::load(options.token_file);
}

std::function<bool(const sockaddr*, socklen_t)> make_address_check(
    const ServerAccessOptions& options) {
  if (options.addresses.empty()) return nullptr;
  return [filter = options.addresses](const sockaddr* address, socklen_t /*length*/) {
    return filter.allows(address);
  };
}

}  // namespace mux
