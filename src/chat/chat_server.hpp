// `mux chat-server`: group chat over TCP. Every line a client sends goes to every other client.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/access/access_options.hpp"
#include "core/service/common_options.hpp"

namespace mux {

struct ChatServerOptions {
  CommonOptions common;
  ServeMode serve = ServeMode::single;
  std::uint64_t max_clients = 0;  // 0: as many as RLIMIT_NOFILE allows once raised
  std::uint64_t max_line = 4096;
  std::uint64_t max_queue = 1 << 20;
  // One address holding many idle connections must not lock out the others.
  std::uint64_t max_per_address = 32;
  // Until TCP keepalive gives up on a silent peer (0: off; counted in whole seconds).
  std::chrono::milliseconds keepalive{60'000};
  // Per-client flow control (ClientLimits in chat/flood_control.hpp has the same defaults).
  std::uint64_t line_rate = 100;
  std::uint64_t line_burst = 1000;
  std::uint64_t byte_rate = 256 * 1024;
  std::uint64_t byte_burst = 512 * 1024;
  std::uint64_t command_rate = 10;
  std::uint64_t command_burst = 50;
  std::chrono::milliseconds flood_timeout{10'000};
  ServerAccessOptions access;  // --tls-*, --token-file, --allow, --deny
  // --auth-timeout: the TLS handshake and the token must be done within this (issue 21 B4).
  std::chrono::milliseconds auth_timeout{10'000};
  // --redis URL: share the room with every server on the same Redis and --room (empty: alone).
  std::string redis_url;
  // --redis-password-file: the Redis password, read from a mode-600 file instead of the URL,
  // where every local user can read it in the process list (MUX_REDIS_PASSWORD does the same).
  std::string redis_password_file;
  // --room-secret-file: a secret every server of the Redis room holds; they sign what they write
  // to Redis with it and drop what fails verification (empty: nothing signed, as before).
  std::string room_secret_file;
  // --redis-tls-*: how a rediss:// server is verified (and who we are to it).
  TlsClientConfig redis_tls;
  std::string room = "lobby";
  // --history N: messages replayed to a newcomer (0: off).
  std::uint64_t history = 0;
  // --announce-up-to N: joins, leaves and renames are announced while the room has at most N.
  std::uint64_t announce_up_to = 1000;
};

// What is wrong with the --redis-* flags as given (empty: nothing): each --redis-tls-* needs a
// rediss:// --redis, a client certificate needs its key, and --redis-password-file and
// --room-secret-file need --redis.
// cli/ reports it as a usage error; the server refuses to start on it too, for options that did not
// come through the command line.
std::string redis_flags_problem(const ChatServerOptions& options);

int run_chat_server(const ChatServerOptions& options);

// --check: loads what run_chat_server() would (TLS certificate and key, token file, the --redis
// URL and its TLS files) without listening or connecting to Redis. Returns what was checked;
// throws as run_chat_server() would at start-up.
std::string check_chat_server(const ChatServerOptions& options);

}  // namespace mux
