// What the servers' --tls-*, --allow and --deny ask for, as a plain struct filled in by cli/ and
// read by chat-server and upload-server; plus the helpers both share to turn it into a TLS
// context, a token set and an admission predicate.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/access_tokens.hpp"
#include "core/cidr.hpp"
#include "core/tls_context.hpp"

namespace mux {

struct ServerAccessOptions {
  TlsServerConfig tls;      // TLS is on when tls.cert_file is set
  std::string token_file;   // clients must present one of these tokens
  AddressFilter addresses;  // --allow / --deny

  [[nodiscard]] bool tls_enabled() const noexcept { return !tls.cert_file.empty(); }
};

// The server's TLS context, or null without --tls-cert. Throws TlsConfigError (a "mux: error:"
// line) for --tls-key without --tls-cert and the like.
std::unique_ptr<TlsServerContext> make_server_tls(const ServerAccessOptions& options);
// The tokens a server requires (empty: none). Throws TokenFileError.
AccessTokens load_server_tokens(const ServerAccessOptions& options);
// The admission hook for --allow/--deny; null when neither was given.
std::function<bool(const sockaddr*, socklen_t)> make_address_check(
    const ServerAccessOptions& options);

}  // namespace mux
