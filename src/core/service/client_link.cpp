#include "core/service/client_link.hpp"

#include <cerrno>
#include <cstdio>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vector>

#include "core/access/access_tokens.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/net.hpp"

namespace mux {

namespace {

std::string describe_timeout(std::chrono::milliseconds timeout) {
  if (timeout.count() % 1000 == 0) return fmt::format("{} s", timeout.count() / 1000);
  return fmt::format("{} ms", timeout.count());
}

}  // namespace

std::uint16_t client_port(const ClientLinkOptions& options, std::uint16_t port) {
  return options.port_in_host.value_or(port);
}

std::string check_client_link(const std::string& host, const ClientLinkOptions& options) {
  std::vector<std::string> checked;
  if (options.wants_tls()) {
    (void)TlsClientContext(options.tls_config, host);
    checked.emplace_back("TLS settings");
  }
  if (!options.token_file.empty()) {
    (void)read_token_file(options.token_file);
    checked.emplace_back("--token-file");
  }
  return fmt::format("{}", fmt::join(checked, ", "));
}

ClientLink open_client_link(const std::string& host, std::uint16_t port,
                            const ClientLinkOptions& options) {
  // The TLS files are read before connecting: a typo must not cost the server a connection.
  std::unique_ptr<TlsClientContext> tls;
  if (options.wants_tls()) tls = std::make_unique<TlsClientContext>(options.tls_config, host);
  ClientLink link;
  if (!options.token_file.empty()) link.token = read_token_file(options.token_file).front();
  link.server = format_endpoint(host, port);
  link.socket = connect_within(host, port, options.connect_timeout);
  set_nodelay(link.socket.get());
  if (!tls) {
    if (!link.token.empty() && !is_loopback_socket(link.socket.get(), true)) {
      // Once, before the token leaves: the person can still interrupt.
      fmt::print(stderr,
                 "mux: warning: sending the token to {} in plaintext: anyone on the way can read "
                 "it (add --tls)\n",
                 link.server);
      std::fflush(stderr);
    }
    link.stream = make_plain_stream(link.socket.get());
    return link;
  }
  std::unique_ptr<TlsStream> stream = tls->make_stream(link.socket.get());
  IoResult result = complete_handshake(*stream, options.connect_timeout);
  if (result.error == ETIMEDOUT)
    throw std::runtime_error(
        fmt::format("TLS with {}: no TLS handshake within {} (a plaintext port?)", link.server,
                    describe_timeout(options.connect_timeout)));
  if (!result.ok())
    throw std::runtime_error(fmt::format("TLS with {}: {}", link.server, result.describe()));
  link.session = stream->describe_session();
  link.stream = std::move(stream);
  return link;
}

ClientRedial::ClientRedial(const std::string& host, std::uint16_t port,
                           const ClientLinkOptions& options)
    : host_(host),
      port_(port),
      server_(format_endpoint(host, port)),
      timeout_(options.connect_timeout) {
  if (options.wants_tls()) tls_ = std::make_unique<TlsClientContext>(options.tls_config, host);
}

std::unique_ptr<Connector> ClientRedial::connect(EventLoop& loop, Connector::Done done) const {
  return std::make_unique<Connector>(loop, host_, port_, timeout_, std::move(done));
}

std::unique_ptr<ByteStream> ClientRedial::make_stream(int fd) const {
  set_nodelay(fd);
  if (tls_) return tls_->make_stream(fd);
  return make_plain_stream(fd);
}

}  // namespace mux
