#include "core/redis/redis_tls_bridge.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace mux {
namespace {

std::system_error system_failure(const std::string& what) {
  return {errno, std::generic_category(), what};
}

// A fresh directory only we can enter: $TMPDIR when its path leaves room in sun_path, else /tmp.
std::string make_private_directory() {
  constexpr std::size_t kRoom = sizeof(sockaddr_un::sun_path) - sizeof("/mux-redis-XXXXXX/s");
  const char* tmpdir = std::getenv("TMPDIR");
  std::string base = tmpdir != nullptr && *tmpdir != '\0' && std::string_view(tmpdir).size() < kRoom
                         ? std::string(tmpdir)
                         : std::string("/tmp");
  std::string name = base + "/mux-redis-XXXXXX";
  std::vector<char> buffer(name.begin(), name.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr)
    throw system_failure(fmt::format("redis TLS bridge: cannot create a directory in {}", base));
  return buffer.data();
}

}  // namespace

RedisTlsBridge::RedisTlsBridge(ConnectionContext& context, const TlsClientContext& tls,
                               const std::string& host, std::uint16_t port, std::string label,
                               Failed failed)
    : context_(context),
      tls_(tls),
      endpoint_(std::move(label)),
      failed_(std::move(failed)),
      directory_(make_private_directory()),
      path_(directory_ + "/s") {
  listener_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener_) {
    remove_socket_file();
    throw system_failure("redis TLS bridge: socket");
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  path_.copy(address.sun_path, sizeof(address.sun_path) - 1);
  if (::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listener_.get(), 1) != 0) {
    auto error = system_failure(fmt::format("redis TLS bridge: bind {}", path_));
    remove_socket_file();
    throw error;
  }
  connector_ = std::make_unique<Connector>(
      context_.loop, host, port, context_.handshake_timeout,
      [this](Fd socket, std::string error) { connected(std::move(socket), error); });
}

RedisTlsBridge::~RedisTlsBridge() {
  remove_socket_file();
}

void RedisTlsBridge::remove_socket_file() noexcept {
  if (directory_.empty()) return;
  ::unlink(path_.c_str());
  ::rmdir(directory_.c_str());
  directory_.clear();
}

void RedisTlsBridge::accept_local() {
  Fd local(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  int saved = errno;
  remove_socket_file();
  listener_.reset();
  if (!local) {
    errno = saved;
    throw system_failure("redis TLS bridge: accept");
  }
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (::getsockopt(local.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 ||
      peer.pid != ::getpid()) {
    errno = EACCES;
    throw system_failure("redis TLS bridge: a connection from another process");
  }
  int fd = local.get();
  local_ =
      std::make_unique<Connection>(context_, std::move(local), make_plain_stream(fd), local_side_);
  local_->set_high_water_mark(kMaxQueued);
  // Nothing to relay to before the server is connected: hiredis's commands wait in its socket.
  if (!server_) local_->pause_reading();
}

void RedisTlsBridge::connected(Fd socket, const std::string& error) {
  if (!socket) {
    fail(fmt::format("{}: {}", endpoint_, error));
    return;
  }
  int fd = socket.get();
  server_ =
      std::make_unique<Connection>(context_, std::move(socket), tls_.make_stream(fd), server_side_);
  server_->set_high_water_mark(kMaxQueued);
  if (local_ && !failed_once_) local_->resume_reading();
}

void RedisTlsBridge::fail(std::string why) {
  if (std::exchange(failed_once_, true)) return;
  if (server_ && !server_->closed()) server_->close_now("");
  if (local_ && !local_->closed()) local_->close_now("");
  failed_(why);
}

void RedisTlsBridge::Side::on_data(std::string_view bytes) {
  if (bridge_.failed_once_) return;
  Connection* other = is_server_ ? bridge_.local_.get() : bridge_.server_.get();
  if (other != nullptr && !other->closing()) other->send(bytes);
}

void RedisTlsBridge::Side::on_end_of_input() {
  bridge_.fail(is_server_ ? fmt::format("{}: TLS: closed by the server", bridge_.endpoint_)
                          : fmt::format("{}: TLS bridge: closed by hiredis", bridge_.endpoint_));
}

void RedisTlsBridge::Side::on_closed(std::string_view reason) {
  bridge_.fail(fmt::format("{}: TLS: {}", bridge_.endpoint_,
                           reason.empty() ? std::string_view("closed") : reason));
}

void RedisTlsBridge::Side::on_high_water(std::size_t queued) {
  bridge_.fail(fmt::format("{}: TLS: {} bytes waiting for the {} to read them", bridge_.endpoint_,
                           queued, is_server_ ? "local side" : "server"));
}

}  // namespace mux
