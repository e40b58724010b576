#include "cli/flag_table.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "chat/room_event.hpp"
#include "core/access/cidr.hpp"
#include "core/loop/net.hpp"
#include "core/redis/redis_link.hpp"
#include "core/tls/tls_stream.hpp"

namespace mux {
namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;
constexpr std::uint64_t TiB = 1024 * GiB;

// Far more than one machine can hold open; the bound only keeps arithmetic on it sane.
constexpr CountBounds kMaxClientsBounds{1, 10'000'000};

// -v, -q: what each changes, exactly, in each subcommand (the man page says the same).
struct VerbosityHelp {
  const char* verbose;
  const char* quiet;
};

constexpr VerbosityHelp kChatServerVerbosity{
    "Log more: also every relayed line",
    "Log only errors (the 'listening on' line is still printed)"};
constexpr VerbosityHelp kUploadServerVerbosity{
    "Log more: also each connection, header, raw upload and (fork mode) child process",
    "Log only errors (the 'listening on' line is still printed)"};
constexpr VerbosityHelp kChatClientVerbosity{
    "Also print where it connected (and the TLS session) on standard error",
    "Print only errors on standard error and leave out the server's welcome (the room's lines "
    "still go to standard output)"};
constexpr VerbosityHelp kUploadClientVerbosity{
    "Also print where it connected, what it sends (and the TLS session) on standard error",
    "Print only errors: no progress and no final line"};

void add_verbosity_flags(FlagSet& flags, CommonOptions& common, const VerbosityHelp& help) {
  flags.switch_flag("-v,--verbose", common.verbose, help.verbose).exclusive("verbosity");
  flags.switch_flag("-q,--quiet", common.quiet, help.quiet).exclusive("verbosity");
}

// Wraps a flag's assign so that giving it is remembered (socket activation warns about it).
void note_given(FlagSpec& spec, bool& given) {
  spec.assign = [store = std::move(spec.assign), &given](const std::string& text) {
    given = true;
    return store(text);
  };
}

void add_server_flags(FlagSet& flags, CommonOptions& common, ServeMode& serve,
                      const VerbosityHelp& verbosity) {
  note_given(flags.text("--host", common.host,
                        "Address to listen on: 127.0.0.1 = this machine only; 0.0.0.0 or :: = "
                        "every interface",
                        "HOST", ValueKind::host),
             common.address_given);
  note_given(
      flags.port("--port", common.port, "TCP port to listen on (0 picks a free port, printed)"),
      common.address_given);
  add_verbosity_flags(flags, common, verbosity);
  flags
      .choice("--log-level", common.log_level,
              "Least severe lines logged: error (as -q), warning, info, debug (as -v)",
              "a log level",
              {{"error", Verbosity::quiet},
               {"warning", Verbosity::warnings},
               {"info", Verbosity::normal},
               {"debug", Verbosity::verbose}})
      .exclusive("verbosity");
  flags.choice("--serve", serve,
               "single: every client in one event loop; fork: a process per client",
               "a serving mode", {{"single", ServeMode::single}, {"fork", ServeMode::fork}});
}

// TLS on both clients. Any --tls-* flag implies --tls; there is no switch that skips
// verification: a self-signed server is trusted by --tls-ca or pinned by --tls-pin.
void add_client_tls_flags(FlagSet& flags, ClientLinkOptions& link) {
  flags.switch_flag("--tls", link.tls,
                    "Speak TLS and verify the server against the system's trusted CAs");
  flags.text("--tls-ca", link.tls_config.ca_file,
             "Trust the CAs in this PEM file instead of the system's (implies --tls)", "FILE",
             ValueKind::path);
  flags.text("--tls-server-name", link.tls_config.server_name,
             "Check this name in the certificate instead of --host (implies --tls)", "NAME");
  flags
      .text("--tls-pin", link.tls_config.pin,
            "Accept exactly the server certificate with this SHA-256 fingerprint (as openssl "
            "x509 -noout -fingerprint -sha256 prints it), or any certificate of the public key "
            "pinned as sha256//BASE64 (as curl's --pinnedpubkey; survives renewals); the server "
            "logs both (implies --tls)",
            "PIN")
      .assign = [&link](const std::string& text) -> std::string {
    if (!parse_pin(text)) return fmt::format("'{}' is not a pin: expected {}", text, kPinForms);
    link.tls_config.pin = text;
    return {};
  };
  flags.text(
      "--token-file", link.token_file,
      "Present the first token in FILE (mode 600): chat sends /token, uploads a token= field",
      "FILE", ValueKind::path);
  flags.text("--tls-cert", link.tls_config.cert_file,
             "Present this PEM client certificate (mutual TLS); needs --tls-key", "FILE",
             ValueKind::path);
  flags.text("--tls-key", link.tls_config.key_file,
             "The PEM private key of the client --tls-cert (unencrypted)", "FILE", ValueKind::path);
}

// A client certificate is a pair: one half alone is a mistake in the command line.
std::string check_client_tls(const ClientLinkOptions& link) {
  const TlsClientConfig& tls = link.tls_config;
  if (tls.cert_file.empty() != tls.key_file.empty())
    return "--tls-cert and --tls-key: a client certificate needs both";
  return {};
}

std::string check_server_tls(const ServerAccessOptions& access) {
  const TlsServerConfig& tls = access.tls;
  if (!tls.cert_cache_dir.empty() && (!access.tls_requested || !tls.cert_file.empty()))
    return "--tls-cert-cache keeps a certificate made with --tls (and no --tls-cert)";
  if (tls.cert_file.empty()) {
    if (!tls.key_file.empty()) return "--tls-key needs --tls-cert (TLS is off without it)";
    if (!tls.client_ca_file.empty() && !access.tls_requested)
      return "--tls-client-ca needs --tls-cert or --tls (TLS is off without them)";
    return {};
  }
  if (tls.key_file.empty()) return fmt::format("--tls-cert {}: needs --tls-key too", tls.cert_file);
  return {};
}

void add_client_flags(FlagSet& flags, CommonOptions& common, ClientLinkOptions& link,
                      const VerbosityHelp& verbosity) {
  FlagSpec& host = flags.text(
      "--host", common.host,
      "Server to connect to: a name, an IPv4 or IPv6 address, HOST:PORT, [IPv6] or [IPv6]:PORT "
      "(a port here wins over --port)",
      "HOST", ValueKind::host);
  host.assign = [&common, &link](const std::string& text) -> std::string {
    std::string why;
    std::optional<HostAndPort> parsed = split_host_port(text, why);
    if (!parsed) return fmt::format("'{}': {}", text, why);
    common.host = parsed->host;
    link.port_in_host = parsed->port;
    return {};
  };
  flags.port("--port", common.port, "Server's TCP port");
  flags.duration("--connect-timeout", link.connect_timeout,
                 "Give up when the server has not accepted the connection (and finished the TLS "
                 "handshake) within this long",
                 {std::chrono::milliseconds{100}, std::chrono::hours{1}});
  add_verbosity_flags(flags, common, verbosity);
  add_client_tls_flags(flags, link);
}

// TLS, tokens and address filters: the same on both servers.
void add_server_access_flags(FlagSet& flags, ServerAccessOptions& access) {
  flags.switch_flag("--tls", access.tls_requested,
                    "Speak TLS; without --tls-cert, with a key and self-signed certificate made at "
                    "start (the --tls-pin for clients is logged)");
  flags.text("--tls-cert-cache", access.tls.cert_cache_dir,
             "With --tls and no --tls-cert: keep the made key and certificate in DIR and reuse "
             "them, so the pin survives restarts",
             "DIR", ValueKind::directory);
  flags.text("--tls-cert", access.tls.cert_file,
             "Serve TLS with this PEM certificate (then its chain); needs --tls-key", "FILE",
             ValueKind::path);
  flags.text("--tls-key", access.tls.key_file, "The PEM private key of --tls-cert (unencrypted)",
             "FILE", ValueKind::path);
  flags.text("--tls-client-ca", access.tls.client_ca_file,
             "Require client certificates signed by a CA in this PEM file (mutual TLS)", "FILE",
             ValueKind::path);
  flags.text("--token-file", access.token_file,
             "Require one of the tokens in FILE (one a line; mode 600) from every client", "FILE",
             ValueKind::path);
  flags.repeated("--allow",
                 "Accept clients only from this address or CIDR range (repeatable; no host names "
                 "or comma lists)",
                 "CIDR", [&access](const std::string& text) -> std::string {
                   auto range = Cidr::parse(text);
                   if (!range) return fmt::format("'{}' is not an address or CIDR range", text);
                   access.addresses.allow(*range);
                   return {};
                 });
  flags.repeated("--deny", "Refuse clients from this address range (repeatable; beats --allow)",
                 "CIDR", [&access](const std::string& text) -> std::string {
                   auto range = Cidr::parse(text);
                   if (!range) return fmt::format("'{}' is not an address or CIDR range", text);
                   access.addresses.deny(*range);
                   return {};
                 });
}

// Issue 12: one room across servers through Redis, and history for late joiners.
void add_chat_room_flags(FlagSet& flags, ChatServerOptions& options) {
  flags
      .text("--redis", options.redis_url,
            "Share the room with every chat-server on this Redis "
            "(redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; rediss:// for TLS)",
            "URL")
      .assign = [&options](const std::string& text) -> std::string {
    try {
      (void)parse_redis_url(text);
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
    options.redis_url = text;
    return {};
  };
  flags.text("--redis-password-file", options.redis_password_file,
             "The Redis password: the first line of FILE (mode 600), not the --redis URL, which "
             "every local user can read in the process list",
             "FILE", ValueKind::path);
  flags.text("--room-secret-file", options.room_secret_file,
             "A secret shared by every server of the room (mode 600, 16+ bytes): what each "
             "writes to Redis is signed with it, and whatever fails verification is dropped",
             "FILE", ValueKind::path);
  // TLS to Redis (rediss://): verified like chat-client's --tls; no switch skips verification.
  flags.text("--redis-tls-ca", options.redis_tls.ca_file,
             "With rediss://: trust the CAs in this PEM file instead of the system's", "FILE",
             ValueKind::path);
  flags.text("--redis-tls-server-name", options.redis_tls.server_name,
             "With rediss://: check this name in Redis's certificate instead of the URL's host",
             "NAME");
  flags.text("--redis-tls-cert", options.redis_tls.cert_file,
             "With rediss://: present this PEM client certificate; needs --redis-tls-key", "FILE",
             ValueKind::path);
  flags.text("--redis-tls-key", options.redis_tls.key_file,
             "With rediss://: the PEM private key of --redis-tls-cert (unencrypted)", "FILE",
             ValueKind::path);
  flags
      .text("--room", options.room,
            "With --redis: the room's name; servers with the same name share it", "NAME")
      .assign = [&options](const std::string& text) -> std::string {
    if (!chat::valid_server_id(text))
      return fmt::format("'{}' is not a room name (1 to 64 of A-Z a-z 0-9 . _ -)", text);
    options.room = text;
    return {};
  };
  flags.count("--history", options.history,
              "Messages replayed to a client that joins (0: off); kept in memory, or in a Redis "
              "stream with --redis",
              {0, 10'000});
  flags.count("--announce-up-to", options.announce_up_to,
              "Announce joins, leaves and renames to everyone while the room (all servers) has "
              "at most this many clients; beyond, they are only logged",
              {0, 100'000'000});
}

void add_chat_server_flags(FlagSet& flags, ChatServerOptions& options) {
  add_server_flags(flags, options.common, options.serve, kChatServerVerbosity);
  flags.count("--max-clients", options.max_clients,
              "Most clients connected at once; newcomers past it read '* server full' "
              "(default: what the fd limit allows; in fork mode also what memory and the pid "
              "limits allow, one process per client)",
              kMaxClientsBounds);
  flags.count("--max-per-address", options.max_per_address,
              "Most clients connected at once from one IP address; 0: no limit", {0, 10'000'000});
  flags.duration("--keepalive", options.keepalive,
                 "How long until a vanished client (no answer to TCP keepalive probes) is "
                 "dropped; 0: off",
                 {std::chrono::milliseconds{0}, std::chrono::hours{24}});
  flags.size("--max-line", options.max_line, "Longest line relayed; longer lines are cut",
             {1, 1 * MiB});
  flags.size("--max-queue", options.max_queue,
             "Output queued for one slow client before it is disconnected", {1 * KiB, 1 * GiB});
  // Per-client flow control (see "Flow control" in the man page); the bench lifts them.
  flags.count("--line-rate", options.line_rate,
              "Lines per second one client may send before it is read more slowly",
              {1, 1'000'000'000});
  flags.count("--line-burst", options.line_burst,
              "Lines one client may send at once above --line-rate", {1, 1'000'000'000});
  flags.size("--byte-rate", options.byte_rate,
             "Bytes per second one client may send before it is read more slowly",
             {1 * KiB, 1 * TiB});
  flags.size("--byte-burst", options.byte_burst,
             "Bytes one client may send at once above --byte-rate", {1 * KiB, 1 * TiB});
  flags.count("--command-rate", options.command_rate,
              "Commands (/who, /nick, ...) per second one client may send; more are ignored",
              {1, 1'000'000'000});
  flags.count("--command-burst", options.command_burst,
              "Commands one client may send at once above --command-rate", {1, 1'000'000'000});
  flags.duration("--flood-timeout", options.flood_timeout,
                 "How long a client may keep sending over its rates before it is disconnected",
                 {std::chrono::seconds{1}, std::chrono::hours{24}});
  add_server_access_flags(flags, options.access);
  flags.duration("--auth-timeout", options.auth_timeout,
                 "A client not through the TLS handshake and the token (--token-file) within "
                 "this is closed",
                 {std::chrono::milliseconds{100}, std::chrono::hours{1}});
  add_chat_room_flags(flags, options);
}

void add_chat_client_flags(FlagSet& flags, ChatClientOptions& options) {
  add_client_flags(flags, options.common, options.link, kChatClientVerbosity);
  flags.text("--nick", options.nick, "Name to take right after connecting (sends /nick NAME)",
             "NAME");
  flags.switch_flag("--timestamps", options.timestamps,
                    "Prefix each line shown with the local time (HH:MM:SS)");
  flags.duration("--confirm-timeout", options.confirm_timeout,
                 "After the end of input, give up (exit 1) when the server has neither taken "
                 "more of our lines nor closed the connection for this long",
                 {std::chrono::milliseconds{100}, std::chrono::hours{1}});
  flags.switch_flag("--no-reconnect", options.no_reconnect,
                    "Exit 1 when the connection drops instead of reconnecting");
  flags.duration("--reconnect-timeout", options.reconnect_timeout,
                 "Give up reconnecting (exit 1) after this long without a connection",
                 {std::chrono::milliseconds{100}, std::chrono::hours{24}});
}

void add_upload_server_flags(FlagSet& flags, UploadServerOptions& options) {
  add_server_flags(flags, options.common, options.serve, kUploadServerVerbosity);
  flags.text("--output-dir", options.output_dir,
             "Save uploads in DIR (default: count, hash and discard)", "DIR", ValueKind::directory);
  flags.choice("--sync", options.sync,
               "full: a saved upload is on disk before OK; none: in the kernel's cache",
               "a sync mode", {{"full", SyncMode::full}, {"none", SyncMode::none}});
  flags.size("--max-size", options.max_size, "Largest upload accepted (default: unlimited)",
             {1, 1024 * TiB});
  flags.count("--max-clients", options.max_clients,
              "Most uploads at once (default: what the fd limit allows)", kMaxClientsBounds);
  flags.size("--min-free", options.min_free,
             "Refuse uploads while --output-dir has less free space (default: 0, off)",
             {0, 1024 * TiB});
  flags.count("--max-per-address", options.max_per_address,
              "Most connections at once from one IP address; 0: no limit", {0, 10'000'000});
  flags.duration("--header-timeout", options.header_timeout,
                 "How long from connecting until the header (or a raw upload's first bytes) must "
                 "have arrived; 0: never",
                 {std::chrono::milliseconds{0}, std::chrono::hours{24}});
  flags.duration("--idle-timeout", options.idle_timeout,
                 "How long an upload may bring no data before it ends with ERR timeout; 0: never",
                 {std::chrono::milliseconds{0}, std::chrono::hours{24}});
  flags.size("--min-rate", options.min_rate,
             "Bytes per second an upload must bring, measured over 30 s (header and body), or "
             "it ends with ERR timeout; 0: off",
             {0, 1 * GiB});
  flags.duration("--keep-partial", options.keep_partial,
                 "How long an interrupted upload is kept for its uploader to resume",
                 {std::chrono::seconds{1}, std::chrono::hours{24 * 365}});
  add_server_access_flags(flags, options.access);
}

void add_upload_client_flags(FlagSet& flags, UploadClientOptions& options) {
  FlagSpec& file = flags.repeated(
      "--file",
      "File or directory to send; - reads stdin. Given more than once, or naming a directory, "
      "sends them all over one connection, paths kept",
      "PATH", [&options](const std::string& path) {
        options.files.push_back(path);
        options.file = options.files.front();
        return std::string();
      });
  file.kind = ValueKind::path;
  file.required();
  add_client_flags(flags, options.common, options.link, kUploadClientVerbosity);
  flags.text("--name", options.name, "Name to store the upload under (default: the file's name)",
             "NAME");
  flags.duration("--timeout", options.timeout,
                 "How long the server may take no data, or not reply after the last byte, before "
                 "giving up; 0: never",
                 {std::chrono::milliseconds{0}, std::chrono::hours{24}});
  flags.switch_flag("--no-resume", options.no_resume,
                    "Start over even when the server kept part of an earlier, interrupted try");
  flags.size("--limit-rate", options.limit_rate,
             "Send at most this many bytes per second (500K, 10M; default: unlimited)",
             {1 * KiB, 1024 * TiB});
  flags.count("--retry", options.retry,
              "When the first connect fails or the connection is lost mid-upload (or the server "
              "restarts), connect again and resume, at most N times within --timeout of the "
              "failure (default: 0, never)",
              {0, 1000});
}

// Every subcommand: settings from a file (cli/config_file.hpp; applied by CommandLine, below the
// command line) and a dry run.
void add_config_flags(FlagSet& flags, AllOptions& options) {
  flags.text("--config", options.config_file,
             "Read settings from FILE: one 'name = value' a line, names as the long flags "
             "without '--'; flags given here win over the file",
             "FILE", ValueKind::path);
  flags.switch_flag("--check", options.check,
                    "Check the flags, the --config file, the TLS and token files and the output "
                    "directory, then exit (0: ok, 2: not) without serving or connecting");
}

}  // namespace

std::vector<Subcommand> make_subcommands(AllOptions& options) {
  std::vector<Subcommand> table(4);
  table[0].name = "chat-server";
  table[0].summary = "Group chat: every line a client sends goes to every other client";
  table[0].is_server = true;
  add_chat_server_flags(table[0].flags, options.chat_server);
  table[0].usage_check = [&options] {
    std::string why = check_server_tls(options.chat_server.access);
    return why.empty() ? redis_flags_problem(options.chat_server) : why;
  };
  table[0].run = [&options] { return run_chat_server(options.chat_server); };
  table[0].check = [&options] { return check_chat_server(options.chat_server); };

  table[1].name = "chat-client";
  table[1].summary = "Chat from a terminal or a pipe";
  add_chat_client_flags(table[1].flags, options.chat_client);
  table[1].usage_check = [&options] { return check_client_tls(options.chat_client.link); };
  table[1].run = [&options] { return run_chat_client(options.chat_client); };
  table[1].check = [&options] {
    return check_client_link(options.chat_client.common.host, options.chat_client.link);
  };

  table[2].name = "upload-server";
  table[2].summary = "Receive uploads: one event loop, or a process per client";
  table[2].is_server = true;
  add_upload_server_flags(table[2].flags, options.upload_server);
  table[2].usage_check = [&options] { return check_server_tls(options.upload_server.access); };
  table[2].run = [&options] { return run_upload_server(options.upload_server); };
  table[2].check = [&options] { return check_upload_server(options.upload_server); };

  table[3].name = "upload-client";
  table[3].summary = "Send a file and verify what the server received";
  add_upload_client_flags(table[3].flags, options.upload_client);
  table[3].usage_check = [&options] { return check_client_tls(options.upload_client.link); };
  table[3].run = [&options] { return run_upload_client(options.upload_client); };
  table[3].check = [&options] { return check_upload_client(options.upload_client); };
  for (Subcommand& subcommand : table)
    add_config_flags(subcommand.flags, options);
  return table;
}

}  // namespace mux
