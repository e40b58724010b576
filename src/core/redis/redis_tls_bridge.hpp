// RedisTlsBridge: TLS to Redis (rediss://) for one hiredis connection. Debian's hiredis (0.14)
// speaks only plain sockets and cannot adopt a socket someone else opened, so instead of a second
// RESP client or a TLS build of hiredis the bridge gives hiredis a private Unix socket to connect
// to and relays its bytes, both ways, through a TlsStream (mux's OpenSSL, verified by the link's
// TlsClientContext: trust store or CA file, the server's name, an optional client certificate) to
// the real server. hiredis still writes and parses every RESP byte; the bridge moves opaque bytes.
//
// The socket lives in a fresh mode-700 directory only for the instant between hiredis's connect
// and our accept (both inside the constructor's caller, before the loop runs again); then the file
// and the directory are removed, and a connection from any process but ours is refused.
//
// Owned by one RedisConnection (core/redis/redis_link.cpp). A failure of the TLS side (refused, bad
// certificate, wrong name, closed) is reported once through `failed`, with the reason, from a
// deferred callback — before hiredis could see its socket close and blame a mere "closed".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/loop/connection.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/fd.hpp"
#include "core/tls/tls_context.hpp"

namespace mux {

class RedisTlsBridge {
 public:
  using Failed = std::function<void(const std::string& why)>;
  // Output queued on either side past this ends the link (Redis or hiredis not reading).
  static constexpr std::size_t kMaxQueued = 64 * 1024 * 1024;

  // Starts connecting to host:port and opens the private listening socket (throws
  // std::system_error when it cannot). `label` names the server in failures.
  RedisTlsBridge(ConnectionContext& context, const TlsClientContext& tls, const std::string& host,
                 std::uint16_t port, std::string label, Failed failed);
  RedisTlsBridge(const RedisTlsBridge&) = delete;
  RedisTlsBridge& operator=(const RedisTlsBridge&) = delete;
  ~RedisTlsBridge();

  // Where hiredis connects (redisAsyncConnectUnix); valid until accept_local().
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  // Takes hiredis's end of the socket (connected by now) and removes the file and directory.
  // Throws std::system_error when nothing (or a stranger) connected.
  void accept_local();

 private:
  // One side of the relay; forwards what it reads to the other side.
  class Side final : public Connection::Owner {
   public:
    Side(RedisTlsBridge& bridge, bool is_server) : bridge_(bridge), is_server_(is_server) {}
    void on_data(std::string_view bytes) override;
    void on_end_of_input() override;
    void on_closed(std::string_view reason) override;
    void on_high_water(std::size_t queued) override;

   private:
    RedisTlsBridge& bridge_;
    bool is_server_;
  };

  void connected(Fd socket, const std::string& error);
  void fail(std::string why);
  void remove_socket_file() noexcept;

  ConnectionContext& context_;
  const TlsClientContext& tls_;
  std::string endpoint_;  // the label, for messages
  Failed failed_;
  std::string directory_;
  std::string path_;
  Fd listener_;
  Side local_side_{*this, false};
  Side server_side_{*this, true};
  std::unique_ptr<Connector> connector_;
  std::unique_ptr<Connection> local_;   // hiredis's end
  std::unique_ptr<Connection> server_;  // TLS to Redis
  bool failed_once_ = false;
};

}  // namespace mux
