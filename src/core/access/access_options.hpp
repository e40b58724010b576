// What the servers' --tls-*, --allow and --deny ask for, as a plain struct filled in by cli/ and
// read by chat-server and upload-server; plus the helpers both share to turn it into a TLS
// context, a token set and an admission predicate.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/access/access_tokens.hpp"
#include "core/access/cidr.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

struct ServerAccessOptions {
  TlsServerConfig tls;         // TLS is on when tls.cert_file is set, or with --tls (self-signed)
  bool tls_requested = false;  // --tls: speak TLS even without --tls-cert
  std::string token_file;      // clients must present one of these tokens
  AddressFilter addresses;     // --allow / --deny

  [[nodiscard]] bool tls_enabled() const noexcept {
    return tls_requested || !tls.cert_file.empty();
  }
};

// The server's TLS context (its own self-signed certificate with --tls alone), or null without
// --tls and --tls-cert. Throws TlsConfigError (a "mux: error:"
// line) for --tls-key without --tls-cert and the like.
std::unique_ptr<TlsServerContext> make_server_tls(const ServerAccessOptions& options);
// The warnings a server logs once at start about how exposed it is: plaintext on an address other
// machines reach, tokens without TLS, --host/--port ignored under socket activation. `listener`
// is the socket it serves on.
std::vector<std::string> exposure_warnings(const ServerAccessOptions& options, int listener,
                                           bool socket_activated, bool address_given);
// The tokens a server requires (empty: none). Throws TokenFileError.
AccessTokens load_server_tokens(const ServerAccessOptions& options);
// The admission hook for --allow/--deny; null when neither was given.
std::function<bool(const sockaddr*, socklen_t)> make_address_check(
    const ServerAccessOptions& options);

}  // namespace mux
