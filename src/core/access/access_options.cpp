#include "core/access/access_options.hpp"

#include <fmt/format.h>

#include "core/loop/net.hpp"

namespace mux {

std::unique_ptr<TlsServerContext> make_server_tls(const ServerAccessOptions& options) {
  const TlsServerConfig& tls = options.tls;
  if (tls.cert_file.empty() && options.tls_requested) {
    if (!tls.key_file.empty()) throw TlsConfigError("--tls-key needs --tls-cert");
    return std::make_unique<TlsServerContext>(tls);
  }
  if (tls.cert_file.empty()) {
    if (!tls.key_file.empty() || !tls.client_ca_file.empty())
      throw TlsConfigError("--tls-key and --tls-client-ca need --tls-cert (TLS is off without it)");
    return nullptr;
  }
  if (tls.key_file.empty())
    throw TlsConfigError("--tls-cert " + tls.cert_file + ": needs --tls-key too");
  return std::make_unique<TlsServerContext>(tls);
}

std::vector<std::string> exposure_warnings(const ServerAccessOptions& options, int listener,
                                           bool socket_activated, bool address_given) {
  std::vector<std::string> warnings;
  bool tls = options.tls_enabled();
  if (!tls && !is_loopback_socket(listener, false)) {
    warnings.push_back(fmt::format(
        "listening on {} without TLS: other machines can read and change what is sent (--tls "
        "makes a certificate)",
        local_address(listener)));
  }
  if (!tls && !options.token_file.empty()) {
    warnings.emplace_back(
        "--token-file without TLS: tokens cross the network readable (add --tls or --tls-cert)");
  }
  if (socket_activated && address_given) {
    warnings.emplace_back(
        "--host and --port are ignored: the listening socket came from the service manager");
  }
  return warnings;
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
