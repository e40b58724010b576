// chat_load: the chat load generator behind bench/run. One process, one epoll loop, N client
// sockets to a line-based chat server on loopback (mux chat-server or `ncat -l -k --chat`).
//
//   burst    S senders send M lines each as fast as the kernel takes them; every client counts the
//            payload lines it receives; deliveries/s once all S*M*(N-1) arrived (or what arrived
//            before the timeout).
//   latency  S senders each send R lines/s stamped with CLOCK_MONOTONIC; receivers report
//            p50/p99/max delivery latency over a bounded duration.
//   idle     N clients connect; the server's memory (its process and all its children) is read
//            from /proc before and after; then one line from one client must reach all others.
//
// Before any measured phase, all clients pass a barrier: client 0 sends probe lines until one
// probe has reached every other client, which proves the server registered them all (and that
// every join notice was already received, since each connection's stream is in order).
//
// Payload lines are recognised by a single marker byte, never by the server's prefix: mux relays
// `[Client 5]: TEXT`, ncat relays `<user5> TEXT` once per read chunk (no line framing), so a
// multi-byte marker could be cut by an ncat prefix, one byte cannot. Notices (`* ...`,
// `<announce> ...`) contain none of the markers.
//
// --tls 1 speaks TLS to the server (mux chat-server --tls-cert ...) with OpenSSL: each client is
// connected once its handshake is done, and every byte goes through SSL_read / SSL_write. With
// --tls-ca FILE the server's chain is verified against that CA; without it nothing is verified.
// That switch exists only here, in a load generator talking to a server it started itself on
// loopback; mux's own clients offer pinning instead.
//
// Output: one JSON object on stdout. Diagnostics on stderr. Loopback addresses only; every phase
// has a deadline, and alarm() ends the process if the loop itself ever hangs.
#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "core/loop/fd.hpp"
#include "core/tls/tls_context.hpp"
#include "core/tls/tls_stream.hpp"

namespace {

constexpr char kBurstMarker = '~';
constexpr char kProbeMarker = '^';
constexpr char kLatencyMarker = '|';

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void fail(const std::string& message) {
  throw std::runtime_error(message);
}

[[noreturn]] void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// How often `wanted` occurs in `bytes`, 16 bytes per step where SSE2 is there (always on x86-64):
// a plain loop is not vectorised at -O2 and runs at a byte per cycle, slower than the server.
// Matches are summed bytewise (each compare yields 0 or -1 per lane) and folded with SAD every
// 255 steps, so no popcount is needed (without -mpopcnt that is a libgcc call per step).
std::uint64_t count_byte(std::string_view bytes, char wanted) {
  std::uint64_t count = 0;
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i needle = _mm_set1_epi8(wanted);
  const __m128i zero = _mm_setzero_si128();
  while (i + 16 <= bytes.size()) {
    __m128i lanes = zero;
    for (int step = 0; step < 255 && i + 16 <= bytes.size(); ++step, i += 16) {
      __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes.data() + i));
      lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(chunk, needle));
    }
    __m128i sums = _mm_sad_epu8(lanes, zero);
    count += static_cast<std::uint64_t>(_mm_cvtsi128_si64(sums)) +
             static_cast<std::uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums)));
  }
#endif
  for (; i < bytes.size(); ++i)
    count += bytes[i] == wanted ? 1 : 0;
  return count;
}

struct Options {
  std::string mode = "burst";
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  int clients = 90;
  int senders = 10;
  int lines = 2000;             // burst: lines per sender
  double rate = 20;             // latency: lines per second per sender
  double duration = 10;         // latency: seconds of sending
  int line_bytes = 64;          // payload line length including '\n'
  double timeout = 60;          // measured phase deadline (s)
  double setup_timeout = 120;   // connect + barrier deadline (s)
  int settle_ms = 200;          // quiet time after the barrier before measuring
  int connect_window = 1000;    // connects in flight at once
  bool await_greeting = false;  // a connect is in flight until its first byte arrives
  pid_t server_pid = 0;         // idle: whose memory to measure
  // Rooms shared by several servers (chat-server --redis): client i connects to the i-th port
  // of "--port P1,P2,..." round robin; the other servers' CPU and the broker's are reported too.
  std::vector<std::uint16_t> more_ports;
  std::vector<pid_t> more_server_pids;
  pid_t broker_pid = 0;           // its CPU over the measured phase
  std::uint16_t broker_port = 0;  // a Redis on 127.0.0.1: INFO counters over the phase
  bool tls = false;               // speak TLS (OpenSSL) to the server
  std::string tls_ca;             // verify the server's chain against this CA ("": no check)
};

void usage() {
  std::fputs(
      "usage: chat_load --mode burst|latency|idle --port P [--host 127.0.0.1] [--clients N]\n"
      "       [--senders S] [--lines M] [--rate R] [--duration SEC] [--line-bytes B]\n"
      "       [--timeout SEC] [--setup-timeout SEC] [--settle-ms MS] [--connect-window W]\n"
      "       [--server-pid PID] [--await-greeting 0|1] [--broker-pid PID --broker-port P]\n"
      "       [--tls 0|1] [--tls-ca FILE]\n"
      "--port P1,P2 and --server-pid A,B: several servers sharing one room (round robin).\n"
      "--await-greeting 1 with a small window paces connects to servers with a short listen\n"
      "backlog (ncat listens with a backlog of 10 and greets every newcomer).\n",
      stderr);
}

template <class T>
T parse_number(std::string_view flag, std::string_view text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) {
    fail(fmt::format("{}: not a number: '{}'", flag, text));
  }
  return value;
}

// "A,B,C": returns A, appends B and C to `rest`.
template <class T>
T parse_first_of_list(std::string_view flag, std::string_view text, std::vector<T>& rest) {
  std::size_t comma = text.find(',');
  T first = parse_number<T>(flag, text.substr(0, comma));
  while (comma != std::string_view::npos) {
    text = text.substr(comma + 1);
    comma = text.find(',');
    rest.push_back(parse_number<T>(flag, text.substr(0, comma)));
  }
  return first;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      usage();
      std::exit(0);
    }
    if (i + 1 >= argc) fail(fmt::format("{} needs a value", flag));
    std::string_view value = argv[++i];
    if (flag == "--mode")
      options.mode = value;
    else if (flag == "--host")
      options.host = value;
    else if (flag == "--port")
      options.port = parse_first_of_list(flag, value, options.more_ports);
    else if (flag == "--clients")
      options.clients = parse_number<int>(flag, value);
    else if (flag == "--senders")
      options.senders = parse_number<int>(flag, value);
    else if (flag == "--lines")
      options.lines = parse_number<int>(flag, value);
    else if (flag == "--rate")
      options.rate = parse_number<double>(flag, value);
    else if (flag == "--duration")
      options.duration = parse_number<double>(flag, value);
    else if (flag == "--line-bytes")
      options.line_bytes = parse_number<int>(flag, value);
    else if (flag == "--timeout")
      options.timeout = parse_number<double>(flag, value);
    else if (flag == "--setup-timeout")
      options.setup_timeout = parse_number<double>(flag, value);
    else if (flag == "--settle-ms")
      options.settle_ms = parse_number<int>(flag, value);
    else if (flag == "--connect-window")
      options.connect_window = parse_number<int>(flag, value);
    else if (flag == "--server-pid")
      options.server_pid = parse_first_of_list(flag, value, options.more_server_pids);
    else if (flag == "--broker-pid")
      options.broker_pid = parse_number<pid_t>(flag, value);
    else if (flag == "--broker-port")
      options.broker_port = parse_number<std::uint16_t>(flag, value);
    else if (flag == "--await-greeting")
      options.await_greeting = value == "1";
    else if (flag == "--tls")
      options.tls = value == "1";
    else if (flag == "--tls-ca")
      options.tls_ca = value;
    else
      fail(fmt::format("unknown flag {}", flag));
  }
  if (options.mode != "burst" && options.mode != "latency" && options.mode != "idle") {
    fail("--mode must be burst, latency or idle");
  }
  if (options.port == 0) fail("--port is required");
  if (options.clients < 2) fail("--clients must be at least 2");
  options.senders = std::clamp(options.senders, 1, options.clients);
  options.line_bytes = std::clamp(options.line_bytes, 48, 4000);
  options.connect_window = std::max(options.connect_window, 1);
  return options;
}

// The benchmark must never leave the machine: refuse anything but a loopback address.
sockaddr_storage loopback_address(const std::string& host, std::uint16_t port, socklen_t& length) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &list) != 0 || list == nullptr) {
    fail(fmt::format("--host {}: not a numeric address", host));
  }
  sockaddr_storage address{};
  std::memcpy(&address, list->ai_addr, list->ai_addrlen);
  length = list->ai_addrlen;
  ::freeaddrinfo(list);
  bool loopback = false;
  if (address.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&address);
    loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  } else if (address.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
  }
  if (!loopback) fail(fmt::format("--host {}: only loopback addresses are allowed", host));
  return address;
}

void raise_fd_limit(int needed) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) fail_errno("getrlimit");
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) fail_errno("setrlimit");
  if (limit.rlim_cur < static_cast<rlim_t>(needed)) {
    fail(fmt::format("RLIMIT_NOFILE hard limit {} is below the {} fds needed", limit.rlim_max,
                     needed));
  }
}

// Memory of a server: its process and every descendant (fork mode serves each client in a child).
struct Memory {
  std::uint64_t rss_bytes = 0;
  std::uint64_t pss_bytes = 0;
  int processes = 0;
};

std::uint64_t status_kib(const std::string& path, std::string_view key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) == 0) {
      return std::strtoull(line.c_str() + key.size(), nullptr, 10);
    }
  }
  return 0;
}

std::vector<pid_t> descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc"), ::closedir);
  if (!dir) return {root};
  while (dirent* entry = ::readdir(dir.get())) {
    pid_t pid = std::atoi(entry->d_name);
    if (pid <= 0) continue;
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string stat;
    std::getline(in, stat);
    auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    std::istringstream rest(stat.substr(close_paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    parent_of.emplace_back(pid, ppid);
  }
  std::vector<pid_t> tree{root};
  for (std::size_t i = 0; i < tree.size(); ++i) {
    for (auto [pid, ppid] : parent_of) {
      if (ppid == tree[i]) tree.push_back(pid);
    }
  }
  return tree;
}

Memory server_memory(pid_t root) {
  Memory memory;
  if (root <= 0) return memory;
  for (pid_t pid : descendants(root)) {
    memory.rss_bytes += status_kib(fmt::format("/proc/{}/status", pid), "VmRSS:") * 1024;
    memory.pss_bytes += status_kib(fmt::format("/proc/{}/smaps_rollup", pid), "Pss:") * 1024;
    ++memory.processes;
  }
  return memory;
}

// CPU time (ns) the server's processes and threads have run so far, from schedstat: unlike
// wall-clock rates it does not depend on whether the generator or other work got the CPU.
std::uint64_t task_cpu_ns(const std::string& task_dir) {
  std::ifstream in(task_dir + "/schedstat");
  std::uint64_t on_cpu = 0;
  in >> on_cpu;
  return on_cpu;
}

std::uint64_t process_cpu_ns(pid_t pid) {
  std::uint64_t total = 0;
  std::string tasks = fmt::format("/proc/{}/task", pid);
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(tasks.c_str()), ::closedir);
  if (!dir) return 0;
  while (dirent* entry = ::readdir(dir.get())) {
    if (entry->d_name[0] != '.') total += task_cpu_ns(tasks + "/" + entry->d_name);
  }
  return total;
}

// The server and all its descendants (fork mode serves each client in a child process).
std::uint64_t tree_cpu_ns(pid_t root) {
  if (root <= 0) return 0;
  std::uint64_t total = 0;
  for (pid_t pid : descendants(root))
    total += process_cpu_ns(pid);
  return total;
}

// TCP segments this machine has sent so far (/proc/net/snmp, Tcp: OutSegs): every socket on the
// machine, the server's deliveries and the clients' ACKs alike. The delta over a measured phase,
// per delivery, shows how many lines the server coalesced into each write (loopback only, so the
// rest of the machine adds little unless another load runs). 0 when unreadable.
std::uint64_t tcp_out_segments() {
  std::ifstream in("/proc/net/snmp");
  std::string header;
  std::string values;
  while (std::getline(in, header) && std::getline(in, values)) {
    if (header.rfind("Tcp:", 0) != 0) continue;
    std::istringstream names(header);
    std::istringstream numbers(values);
    std::string name;
    std::string number;
    while (names >> name && numbers >> number) {
      if (name == "OutSegs") return std::strtoull(number.c_str(), nullptr, 10);
    }
  }
  return 0;
}

// Redis's own counters (INFO over a blocking loopback connection, outside any timed window):
// commands processed and PUBLISH calls. Zeros when it cannot be asked.
struct BrokerCounters {
  std::uint64_t commands = 0;
  std::uint64_t publishes = 0;
  std::uint64_t in_bytes = 0;   // from the servers
  std::uint64_t out_bytes = 0;  // to them (each PUBLISH once per subscribed server)
};

BrokerCounters broker_counters(std::uint16_t port) {
  BrokerCounters counters;
  socklen_t length = 0;
  sockaddr_storage address = loopback_address("127.0.0.1", port, length);
  mux::Fd sock(::socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP));
  timeval timeout{2, 0};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (!sock || ::connect(sock.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0)
    return counters;
  std::string_view request = "*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n";
  if (::send(sock.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size()))
    return counters;
  std::string reply;
  char buffer[16384];
  std::size_t wanted = 0;  // header + bulk length + CRLF, once the header is in
  while (wanted == 0 || reply.size() < wanted) {
    ssize_t got = ::recv(sock.get(), buffer, sizeof buffer, 0);
    if (got <= 0) return counters;
    reply.append(buffer, static_cast<std::size_t>(got));
    std::size_t end = reply.find("\r\n");
    if (wanted == 0 && end != std::string::npos && reply[0] == '$')
      wanted = end + 2 + std::strtoull(reply.c_str() + 1, nullptr, 10) + 2;
  }
  auto field = [&reply](std::string_view name) -> std::uint64_t {
    std::size_t at = reply.find(name);
    return at == std::string::npos ? 0
                                   : std::strtoull(reply.c_str() + at + name.size(), nullptr, 10);
  };
  counters.commands = field("total_commands_processed:");
  counters.publishes = field("cmdstat_publish:calls=");
  counters.in_bytes = field("total_net_input_bytes:");
  counters.out_bytes = field("total_net_output_bytes:");
  return counters;
}

// The last OpenSSL error queued on this thread, for a one-line failure.
std::string ssl_error_text(int ssl_error) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code != 0) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    return text;
  }
  if (ssl_error == SSL_ERROR_SYSCALL) return errno != 0 ? std::strerror(errno) : "unexpected EOF";
  return fmt::format("SSL error {}", ssl_error);
}

struct Client {
  mux::Fd fd;
  mux::UniqueSsl ssl;        // --tls: freed before the socket closes
  bool handshaking = false;  // --tls: TCP connected, TLS handshake under way
  bool connecting = false;
  bool connected = false;
  bool closed = false;
  std::string partial;  // received bytes after the last '\n'
  std::string out;      // bytes still to send
  std::size_t out_offset = 0;
  std::uint64_t burst_lines = 0;
  std::uint64_t probe_seen = 0;  // highest probe sequence number received
  bool greeted = false;          // received at least one byte
};

class ChatLoad {
 public:
  explicit ChatLoad(Options options) : options_(std::move(options)) {
    address_ = loopback_address(options_.host, options_.port, address_length_);
    addresses_.push_back(address_);
    for (std::uint16_t port : options_.more_ports)
      addresses_.push_back(loopback_address(options_.host, port, address_length_));
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) fail_errno("epoll_create1");
    clients_.resize(static_cast<std::size_t>(options_.clients));
    read_buffer_.resize(256 * 1024);
    if (options_.tls) make_tls_context();
  }

  bool run() {
    Memory before = server_memory(options_.server_pid);
    auto setup_start = Clock::now();
    connect_all();
    double connect_seconds = seconds_since(setup_start);
    barrier();
    settle();
    double setup_seconds = seconds_since(setup_start);
    json_ += fmt::format(
        "\"clients\":{},\"connected\":{},\"connect_s\":{:.3f},"
        "\"setup_s\":{:.3f},\"probes\":{},",
        options_.clients, connected_count(), connect_seconds, setup_seconds, probes_sent_);
    bool ok = false;
    SharedRoomSample shared_before = sample_shared_room();
    if (options_.mode == "burst")
      ok = run_burst();
    else if (options_.mode == "latency")
      ok = run_latency();
    else
      ok = run_idle(before);
    add_shared_room_json(shared_before, sample_shared_room());
    json_ += fmt::format("\"disconnected\":{}", closed_count());
    return ok;
  }

  // The fields measured so far, as the inside of a JSON object (also after an error).
  [[nodiscard]] const std::string& json() const noexcept { return json_; }

 private:
  // --- TLS -------------------------------------------------------------------------------------

  void make_tls_context() {
    tls_.reset(SSL_CTX_new(TLS_client_method()));
    if (!tls_) fail("SSL_CTX_new: " + ssl_error_text(0));
    SSL_CTX_set_min_proto_version(tls_.get(), TLS1_2_VERSION);
    // Partial writes: a 128 KiB burst goes out record by record as the socket takes it; the
    // queued string may grow (and move) between a blocked write and its retry.
    SSL_CTX_set_mode(tls_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE |
                                     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                     SSL_MODE_RELEASE_BUFFERS);
    if (options_.tls_ca.empty()) {
      SSL_CTX_set_verify(tls_.get(), SSL_VERIFY_NONE, nullptr);  // a load generator, see top
    } else {
      if (SSL_CTX_load_verify_locations(tls_.get(), options_.tls_ca.c_str(), nullptr) != 1)
        fail(fmt::format("--tls-ca {}: {}", options_.tls_ca, ssl_error_text(0)));
      SSL_CTX_set_verify(tls_.get(), SSL_VERIFY_PEER, nullptr);
    }
  }

  void start_handshake(std::size_t index) {
    Client& client = clients_[index];
    client.ssl.reset(SSL_new(tls_.get()));
    if (!client.ssl || SSL_set_fd(client.ssl.get(), client.fd.get()) != 1)
      fail("SSL_new: " + ssl_error_text(0));
    SSL_set_connect_state(client.ssl.get());
    client.handshaking = true;
    drive_handshake(index);
  }

  void drive_handshake(std::size_t index) {
    Client& client = clients_[index];
    ERR_clear_error();
    int rc = SSL_do_handshake(client.ssl.get());
    if (rc == 1) {
      client.handshaking = false;
      mark_connected(index);
      read_client(index);  // the server's first bytes may have come with its last flight
      return;
    }
    int error = SSL_get_error(client.ssl.get(), rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      set_writable_interest(index, error == SSL_ERROR_WANT_WRITE);
      return;
    }
    fail(fmt::format("TLS handshake of client {}: {}", index, ssl_error_text(error)));
  }

  // --- connecting -------------------------------------------------------------------------------

  void start_connect(std::size_t index) {
    Client& client = clients_[index];
    const sockaddr_storage& address = addresses_[index % addresses_.size()];
    client.fd.reset(
        ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!client.fd) fail_errno("socket");
    int one = 1;
    ::setsockopt(client.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc =
        ::connect(client.fd.get(), reinterpret_cast<const sockaddr*>(&address), address_length_);
    if (rc != 0 && errno != EINPROGRESS) fail_errno("connect");
    client.connecting = true;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    event.data.u64 = index;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, client.fd.get(), &event) != 0) {
      fail_errno("epoll_ctl ADD");
    }
  }

  void finish_connect(std::size_t index) {
    Client& client = clients_[index];
    int error = 0;
    socklen_t length = sizeof error;
    ::getsockopt(client.fd.get(), SOL_SOCKET, SO_ERROR, &error, &length);
    if (error != 0) {
      fail(fmt::format("connect client {}: {}", index, std::strerror(error)));
    }
    client.connecting = false;
    set_writable_interest(index, false);
    if (tls_) return start_handshake(index);
    mark_connected(index);
  }

  void mark_connected(std::size_t index) {
    clients_[index].connected = true;
    ++in_connected_;
  }

  void connect_all() {
    std::size_t next = 0;
    auto deadline = Clock::now() + to_duration(options_.setup_timeout);
    auto done = [&] { return options_.await_greeting ? greeted_ : in_connected_; };
    while (done() < clients_.size()) {
      while (next < clients_.size() &&
             next - done() < static_cast<std::size_t>(options_.connect_window)) {
        start_connect(next++);
      }
      if (Clock::now() > deadline) {
        fail(fmt::format("only {} of {} clients connected ({} greeted) before the setup timeout",
                         in_connected_, clients_.size(), greeted_));
      }
      poll(50);
    }
  }

  // --- the event loop ---------------------------------------------------------------------------

  static Clock::duration to_duration(double seconds) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

  void set_writable_interest(std::size_t index, bool want) {
    Client& client = clients_[index];
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
    event.data.u64 = index;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, client.fd.get(), &event) != 0) {
      fail_errno("epoll_ctl MOD");
    }
  }

  // One epoll_wait and the dispatch of what it returned. Returns the number of events.
  int poll(int timeout_ms) {
    events_.resize(1024);
    int ready =
        ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()), timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) return 0;
      fail_errno("epoll_wait");
    }
    for (int i = 0; i < ready; ++i) {
      std::size_t index = events_[static_cast<std::size_t>(i)].data.u64;
      std::uint32_t fired = events_[static_cast<std::size_t>(i)].events;
      Client& client = clients_[index];
      if (client.closed) continue;
      if (client.connecting) {
        if ((fired & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) finish_connect(index);
        continue;
      }
      if (client.handshaking) {
        drive_handshake(index);
        continue;
      }
      if ((fired & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) read_client(index);
      if ((fired & EPOLLOUT) != 0 && !client.closed) write_client(index);
    }
    return ready;
  }

  // Bytes from the socket or, with --tls, decrypted records: >0 bytes, 0 end, -1 errno set
  // (EAGAIN: nothing now). A TLS read that needs the socket writable waits for EPOLLOUT.
  ssize_t receive(std::size_t index, bool& more_buffered) {
    Client& client = clients_[index];
    more_buffered = false;
    if (!client.ssl) return ::recv(client.fd.get(), read_buffer_.data(), read_buffer_.size(), 0);
    ERR_clear_error();
    int got = SSL_read(client.ssl.get(), read_buffer_.data(),
                       static_cast<int>(std::min<std::size_t>(read_buffer_.size(), INT32_MAX)));
    if (got > 0) {
      // SSL_read returns one record at a time: keep reading until OpenSSL asks for the socket.
      more_buffered = true;
      return got;
    }
    int error = SSL_get_error(client.ssl.get(), got);
    if (error == SSL_ERROR_ZERO_RETURN) return 0;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      if (error == SSL_ERROR_WANT_WRITE) set_writable_interest(index, true);
      errno = EAGAIN;
      return -1;
    }
    if (error == SSL_ERROR_SYSCALL && got == 0) return 0;  // EOF without close_notify
    if (error != SSL_ERROR_SYSCALL) errno = EPROTO;
    ERR_clear_error();
    return -1;
  }

  ssize_t transmit(std::size_t index, const char* data, std::size_t size) {
    Client& client = clients_[index];
    if (!client.ssl) return ::send(client.fd.get(), data, size, MSG_NOSIGNAL);
    ERR_clear_error();
    int sent =
        SSL_write(client.ssl.get(), data, static_cast<int>(std::min<std::size_t>(size, INT32_MAX)));
    if (sent > 0) return sent;
    int error = SSL_get_error(client.ssl.get(), sent);
    // Either want: retry on the next writable event (TLS 1.3 without renegotiation never needs
    // the socket readable to write after the handshake).
    errno = (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) ? EAGAIN : EPIPE;
    ERR_clear_error();
    return -1;
  }

  void read_client(std::size_t index) {
    Client& client = clients_[index];
    for (;;) {
      bool more_buffered = false;
      ssize_t got = receive(index, more_buffered);
      if (got > 0) {
        std::int64_t received_at = options_.mode == "latency" ? now_ns() : 0;
        bytes_received_ += static_cast<std::uint64_t>(got);
        if (!client.greeted) {
          client.greeted = true;
          ++greeted_;
        }
        last_receive_ = Clock::now();
        consume(client, std::string_view(read_buffer_.data(), static_cast<std::size_t>(got)),
                received_at);
        if (!more_buffered && static_cast<std::size_t>(got) < read_buffer_.size()) return;
        if (client.closed) return;
        continue;
      }
      if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        note_close(index, got == 0 ? "closed by server" : std::strerror(errno));
        return;
      }
      if (errno == EAGAIN) return;
    }
  }

  // The first few unexpected closes are worth a line on stderr: they explain an incomplete run.
  void note_close(std::size_t index, const char* why) {
    if (++close_notes_ <= 5) fmt::print(stderr, "chat_load: client {}: {}\n", index, why);
    close_client(index);
  }

  void close_client(std::size_t index) {
    Client& client = clients_[index];
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, client.fd.get(), nullptr);
    client.ssl.reset();
    client.fd.reset();
    client.closed = true;
  }

  void consume(Client& client, std::string_view bytes, std::int64_t received_at) {
    if (count_only_) {
      std::uint64_t lines = count_byte(bytes, kBurstMarker);
      client.burst_lines += lines;
      burst_total_ += lines;
      if (lines != 0 && burst_total_ >= burst_expected_ && !burst_complete_) {
        burst_complete_ = true;
        burst_done_ = Clock::now();
      }
      return;
    }
    while (!bytes.empty()) {
      auto newline = bytes.find('\n');
      if (newline == std::string_view::npos) {
        client.partial.append(bytes);
        return;
      }
      if (client.partial.empty()) {
        on_line(client, bytes.substr(0, newline), received_at);
      } else {
        client.partial.append(bytes.substr(0, newline));
        on_line(client, client.partial, received_at);
        client.partial.clear();
      }
      bytes.remove_prefix(newline + 1);
    }
  }

  void on_line(Client& client, std::string_view line, std::int64_t received_at) {
    if (line.find(kBurstMarker) != std::string_view::npos) {
      ++client.burst_lines;
      ++burst_total_;
      if (burst_total_ >= burst_expected_ && !burst_complete_) {
        burst_complete_ = true;
        burst_done_ = Clock::now();
      }
      return;
    }
    if (auto at = line.find(kProbeMarker); at != std::string_view::npos) {
      auto sequence = read_number(line.substr(at + 1));
      if (sequence && *sequence > client.probe_seen) client.probe_seen = *sequence;
      return;
    }
    if (auto at = line.find(kLatencyMarker); at != std::string_view::npos) {
      auto sent = read_number(line.substr(at + 1));
      if (!sent) {
        ++latency_unparsed_;
        return;
      }
      latencies_ns_.push_back(received_at - static_cast<std::int64_t>(*sent));
    }
  }

  static std::optional<std::uint64_t> read_number(std::string_view text) {
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end == text.data()) return std::nullopt;
    return value;
  }

  void send_bytes(std::size_t index, std::string_view bytes) {
    Client& client = clients_[index];
    if (client.closed) return;
    bool was_idle = client.out_offset == client.out.size();
    if (was_idle) {
      client.out.clear();
      client.out_offset = 0;
    }
    client.out.append(bytes);
    if (was_idle) write_client(index);
  }

  void write_client(std::size_t index) {
    Client& client = clients_[index];
    while (client.out_offset < client.out.size()) {
      ssize_t sent = transmit(index, client.out.data() + client.out_offset,
                              client.out.size() - client.out_offset);
      if (sent > 0) {
        client.out_offset += static_cast<std::size_t>(sent);
        continue;
      }
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && errno == EAGAIN) {
        set_writable_interest(index, true);
        return;
      }
      note_close(index, std::strerror(errno));
      return;
    }
    client.out.clear();
    client.out_offset = 0;
    set_writable_interest(index, false);
  }

  std::string padded(std::string text) const {
    auto wanted = static_cast<std::size_t>(options_.line_bytes - 1);
    if (text.size() < wanted) text.append(wanted - text.size(), 'x');
    text.push_back('\n');
    return text;
  }

  // --- setup phases -----------------------------------------------------------------------------

  // Probes until one reached every other client. A probe sent while the server had not yet
  // registered some clients misses them, so probes repeat with growing sequence numbers.
  void barrier() {
    auto deadline = Clock::now() + to_duration(options_.setup_timeout);
    for (;;) {
      std::uint64_t sequence = ++probes_sent_;
      send_bytes(0, padded(fmt::format("{}{} probe ", kProbeMarker, sequence)));
      auto retry_at = Clock::now() + std::chrono::milliseconds(500 + 100 * (sequence - 1));
      while (Clock::now() < retry_at) {
        if (clients_[0].closed) fail("client 0 was disconnected during the barrier");
        if (probe_reached_everyone(sequence)) return;
        if (Clock::now() > deadline) {
          fail(fmt::format("barrier: after {} probes, {} of {} clients are reachable", probes_sent_,
                           reached_count(sequence) + 1, clients_.size()));
        }
        poll(20);
      }
    }
  }

  std::size_t reached_count(std::uint64_t sequence) const {
    std::size_t reached = 0;
    for (std::size_t i = 1; i < clients_.size(); ++i) {
      if (clients_[i].probe_seen >= sequence) ++reached;
    }
    return reached;
  }

  bool probe_reached_everyone(std::uint64_t sequence) const {
    return reached_count(sequence) == clients_.size() - 1;
  }

  // Drains whatever is still arriving (late probe copies, notices) until the line is quiet.
  void settle() {
    auto deadline = Clock::now() + to_duration(options_.setup_timeout);
    last_receive_ = Clock::now();
    auto quiet = std::chrono::milliseconds(options_.settle_ms);
    while (Clock::now() - last_receive_ < quiet && Clock::now() < deadline)
      poll(10);
  }

  // --- measured phases --------------------------------------------------------------------------

  bool run_burst() {
    auto receivers = static_cast<std::uint64_t>(options_.clients - 1);
    burst_expected_ = static_cast<std::uint64_t>(options_.senders) *
                      static_cast<std::uint64_t>(options_.lines) * receivers;
    burst_total_ = 0;
    for (auto& client : clients_)
      client.burst_lines = 0;
    // Every sender's lines are formatted before the clock starts.
    std::vector<std::string> payloads(static_cast<std::size_t>(options_.senders));
    for (std::size_t s = 0; s < payloads.size(); ++s) {
      payloads[s].reserve(static_cast<std::size_t>(options_.lines * options_.line_bytes));
      for (int n = 0; n < options_.lines; ++n) {
        payloads[s] += padded(fmt::format("{}s{} n{} ", kBurstMarker, s, n));
      }
    }
    // While the burst runs, received bytes are only counted, not split into lines: one marker
    // byte per payload line and none anywhere else, so a vectorised count is exact and keeps
    // the generator well ahead of the server (parsing every line made the generator, not the
    // server, the bottleneck at 25 M deliveries/s).
    count_only_ = true;
    std::uint64_t server_cpu_at_start = tree_cpu_ns(options_.server_pid);
    std::uint64_t own_cpu_at_start = process_cpu_ns(::getpid());
    auto start = Clock::now();
    std::uint64_t bytes_at_start = bytes_received_;
    for (std::size_t s = 0; s < payloads.size(); ++s)
      send_bytes(s, payloads[s]);
    auto deadline = start + to_duration(options_.timeout);
    while (burst_total_ < burst_expected_ && Clock::now() < deadline &&
           closed_count() < clients_.size()) {
      poll(10);
    }
    count_only_ = false;
    bool complete = burst_total_ >= burst_expected_;
    double elapsed =
        std::chrono::duration<double>((complete ? burst_done_ : Clock::now()) - start).count();
    auto own_cpu = static_cast<double>(process_cpu_ns(::getpid()) - own_cpu_at_start) / 1e9;
    auto server_cpu =
        static_cast<double>(tree_cpu_ns(options_.server_pid) - server_cpu_at_start) / 1e9;
    std::uint64_t min_lines = UINT64_MAX;
    std::uint64_t max_lines = 0;
    for (auto& client : clients_) {
      min_lines = std::min(min_lines, client.burst_lines);
      max_lines = std::max(max_lines, client.burst_lines);
    }
    json_ += fmt::format(
        "\"senders\":{},\"lines\":{},\"line_bytes\":{},\"expected\":{},\"delivered\":{},"
        "\"complete\":{},\"seconds\":{:.6f},\"deliveries_per_s\":{:.1f},"
        "\"received_mb_per_s\":{:.1f},\"min_per_client\":{},\"max_per_client\":{},"
        "\"server_cpu_s\":{:.6f},\"server_ns_per_delivery\":{:.2f},"
        "\"server_limited_deliveries_per_s\":{:.1f},\"generator_cpu_s\":{:.6f},",
        options_.senders, options_.lines, options_.line_bytes, burst_expected_, burst_total_,
        complete ? "true" : "false", elapsed,
        elapsed > 0 ? static_cast<double>(burst_total_) / elapsed : 0.0,
        elapsed > 0 ? static_cast<double>(bytes_received_ - bytes_at_start) / elapsed / 1e6 : 0.0,
        min_lines, max_lines, server_cpu,
        burst_total_ > 0 ? server_cpu * 1e9 / static_cast<double>(burst_total_) : 0.0,
        server_cpu > 0 ? static_cast<double>(burst_total_) / server_cpu : 0.0, own_cpu);
    return complete;
  }

  bool run_latency() {
    auto period = std::chrono::duration<double>(1.0 / options_.rate);
    std::uint64_t server_cpu_at_start = tree_cpu_ns(options_.server_pid);
    std::uint64_t own_cpu_at_start = process_cpu_ns(::getpid());
    std::uint64_t segments_at_start = tcp_out_segments();
    auto start = Clock::now();
    std::vector<Clock::time_point> next_send(static_cast<std::size_t>(options_.senders));
    for (std::size_t s = 0; s < next_send.size(); ++s) {
      // Stagger the senders evenly over one period, as independent people would.
      next_send[s] =
          start + std::chrono::duration_cast<Clock::duration>(
                      period * static_cast<double>(s) / static_cast<double>(next_send.size()));
    }
    auto send_until = start + to_duration(options_.duration);
    std::uint64_t sent = 0;
    while (Clock::now() < send_until) {
      auto now = Clock::now();
      auto earliest = send_until;
      for (std::size_t s = 0; s < next_send.size(); ++s) {
        if (next_send[s] <= now) {
          send_bytes(s, padded(fmt::format("{}{} s{} ", kLatencyMarker, now_ns(), s)));
          ++sent;
          next_send[s] += std::chrono::duration_cast<Clock::duration>(period);
        }
        earliest = std::min(earliest, next_send[s]);
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(earliest - Clock::now());
      // epoll_wait has millisecond resolution; 0 spins through the last sub-millisecond.
      poll(static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, 10)));
    }
    auto expected = sent * static_cast<std::uint64_t>(options_.clients - 1);
    auto grace_until = Clock::now() + to_duration(std::min(options_.timeout, 5.0));
    while (latencies_ns_.size() + latency_unparsed_ < expected && Clock::now() < grace_until) {
      poll(10);
    }
    // What one line costs the server: the fanout to every receiver (and, in fork mode, the
    // relay through the parent). At R lines/s that share of a core is queueing the lines wait in.
    std::uint64_t server_cpu_now = tree_cpu_ns(options_.server_pid);
    auto server_cpu = static_cast<double>(server_cpu_now - server_cpu_at_start) / 1e9;
    auto own_cpu = static_cast<double>(process_cpu_ns(::getpid()) - own_cpu_at_start) / 1e9;
    std::uint64_t segments = tcp_out_segments() - segments_at_start;
    double active = seconds_since(start);
    std::vector<std::int64_t> sorted = latencies_ns_;
    std::sort(sorted.begin(), sorted.end());
    auto percentile = [&](double p) -> double {
      if (sorted.empty()) return 0.0;
      auto rank = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
      return static_cast<double>(sorted[std::min(rank, sorted.size() - 1)]) / 1e6;
    };
    bool complete = latencies_ns_.size() + latency_unparsed_ >= expected;
    json_ += fmt::format(
        "\"senders\":{},\"rate\":{},\"duration_s\":{},\"sent\":{},\"expected\":{},"
        "\"delivered\":{},\"unparsed\":{},\"complete\":{},\"p50_ms\":{:.3f},"
        "\"p90_ms\":{:.3f},\"p99_ms\":{:.3f},\"p999_ms\":{:.3f},\"max_ms\":{:.3f},"
        "\"server_cpu_s\":{:.6f},\"server_cpu_ms_per_line\":{:.3f},\"server_busy_share\":{:.3f},"
        "\"generator_cpu_s\":{:.6f},\"tcp_out_segments\":{},\"server_cpu_since_start_s\":{:.6f},",
        options_.senders, options_.rate, options_.duration, sent, expected, latencies_ns_.size(),
        latency_unparsed_, complete ? "true" : "false", percentile(0.50), percentile(0.90),
        percentile(0.99), percentile(0.999),
        sorted.empty() ? 0.0 : static_cast<double>(sorted.back()) / 1e6, server_cpu,
        sent > 0 ? server_cpu * 1e3 / static_cast<double>(sent) : 0.0,
        active > 0 ? server_cpu / active : 0.0, own_cpu, segments,
        static_cast<double>(server_cpu_now) / 1e9);
    return complete && !sorted.empty();
  }

  bool run_idle(const Memory& before) {
    Memory after = server_memory(options_.server_pid);
    burst_expected_ = static_cast<std::uint64_t>(options_.clients - 1);
    burst_total_ = 0;
    auto start = Clock::now();
    send_bytes(0, padded(fmt::format("{}idle line ", kBurstMarker)));
    auto deadline = start + to_duration(options_.timeout);
    while (burst_total_ < burst_expected_ && Clock::now() < deadline)
      poll(10);
    bool complete = burst_total_ >= burst_expected_;
    double elapsed =
        std::chrono::duration<double>((complete ? burst_done_ : Clock::now()) - start).count();
    auto clients = static_cast<double>(options_.clients);
    auto per_client = [&](std::uint64_t a, std::uint64_t b) {
      return (static_cast<double>(b) - static_cast<double>(a)) / clients;
    };
    json_ += fmt::format(
        "\"server_pid\":{},\"processes_before\":{},\"processes_after\":{},"
        "\"rss_before\":{},\"rss_after\":{},\"pss_before\":{},\"pss_after\":{},"
        "\"rss_per_client\":{:.1f},\"pss_per_client\":{:.1f},"
        "\"expected\":{},\"delivered\":{},\"complete\":{},\"seconds\":{:.6f},",
        options_.server_pid, before.processes, after.processes, before.rss_bytes, after.rss_bytes,
        before.pss_bytes, after.pss_bytes, per_client(before.rss_bytes, after.rss_bytes),
        per_client(before.pss_bytes, after.pss_bytes), burst_expected_, burst_total_,
        complete ? "true" : "false", elapsed);
    return complete && options_.server_pid > 0 && after.processes > 0;
  }

  // --- counters ---------------------------------------------------------------------------------

  std::size_t connected_count() const {
    return static_cast<std::size_t>(std::count_if(clients_.begin(), clients_.end(),
                                                  [](const Client& c) { return c.connected; }));
  }
  std::size_t closed_count() const {
    return static_cast<std::size_t>(
        std::count_if(clients_.begin(), clients_.end(), [](const Client& c) { return c.closed; }));
  }

  // --- several servers and their broker (--port P1,P2, --broker-pid, --broker-port) ------------

  struct SharedRoomSample {
    Clock::time_point when = Clock::now();
    std::uint64_t other_servers_cpu_ns = 0;
    std::uint64_t broker_cpu_ns = 0;
    BrokerCounters broker;
  };

  SharedRoomSample sample_shared_room() const {
    SharedRoomSample sample;
    for (pid_t pid : options_.more_server_pids)
      sample.other_servers_cpu_ns += tree_cpu_ns(pid);
    if (options_.broker_pid > 0) sample.broker_cpu_ns = process_cpu_ns(options_.broker_pid);
    if (options_.broker_port != 0) sample.broker = broker_counters(options_.broker_port);
    return sample;
  }

  void add_shared_room_json(const SharedRoomSample& a, const SharedRoomSample& b) {
    if (options_.more_server_pids.empty() && options_.broker_pid <= 0 && options_.broker_port == 0)
      return;
    double seconds = std::chrono::duration<double>(b.when - a.when).count();
    auto publishes = static_cast<double>(b.broker.publishes - a.broker.publishes);
    double broker_cpu = static_cast<double>(b.broker_cpu_ns - a.broker_cpu_ns) / 1e9;
    json_ += fmt::format(
        "\"servers\":{},\"phase_s\":{:.6f},\"other_servers_cpu_s\":{:.6f},"
        "\"broker_cpu_s\":{:.6f},\"broker_busy_share\":{:.4f},\"broker_commands\":{},"
        "\"broker_publishes\":{},\"broker_publishes_per_s\":{:.1f},"
        "\"broker_us_per_publish\":{:.3f},\"broker_in_bytes_per_s\":{:.0f},"
        "\"broker_out_bytes_per_s\":{:.0f},",
        1 + options_.more_ports.size(), seconds,
        static_cast<double>(b.other_servers_cpu_ns - a.other_servers_cpu_ns) / 1e9, broker_cpu,
        seconds > 0 ? broker_cpu / seconds : 0.0, b.broker.commands - a.broker.commands,
        b.broker.publishes - a.broker.publishes, seconds > 0 ? publishes / seconds : 0.0,
        publishes > 0 ? broker_cpu * 1e6 / publishes : 0.0,
        seconds > 0 ? static_cast<double>(b.broker.in_bytes - a.broker.in_bytes) / seconds : 0.0,
        seconds > 0 ? static_cast<double>(b.broker.out_bytes - a.broker.out_bytes) / seconds : 0.0);
  }

  Options options_;
  std::vector<sockaddr_storage> addresses_;  // one per server port
  sockaddr_storage address_{};
  socklen_t address_length_ = 0;
  mux::Fd epoll_;
  mux::UniqueSslCtx tls_;  // --tls; outlives every client's SSL
  std::vector<Client> clients_;
  std::vector<epoll_event> events_;
  std::vector<char> read_buffer_;
  std::size_t in_connected_ = 0;
  std::size_t greeted_ = 0;
  std::uint64_t probes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  Clock::time_point last_receive_ = Clock::now();
  std::uint64_t burst_expected_ = UINT64_MAX;
  std::uint64_t burst_total_ = 0;
  bool burst_complete_ = false;
  bool count_only_ = false;  // burst phase: count marker bytes, do not split lines
  Clock::time_point burst_done_ = Clock::now();
  std::vector<std::int64_t> latencies_ns_;
  std::uint64_t latency_unparsed_ = 0;
  std::string json_;
  int close_notes_ = 0;
};

}  // namespace

std::string json_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    out.push_back(c);
  }
  return out;
}

// Exit status: 0 measured and complete, 3 measured but incomplete (timeout, drops), 1 error,
// 2 usage. stdout always carries one JSON object, also on errors.
int main(int argc, char** argv) {
  Options options;
  try {
    options = parse_options(argc, argv);
  } catch (const std::exception& error) {
    fmt::print(stderr, "chat_load: error: {}\n", error.what());
    usage();
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  // A backstop beyond every phase deadline: the generator never outlives its budget.
  ::alarm(
      static_cast<unsigned>(options.setup_timeout * 3 + options.timeout + options.duration + 30));
  std::string mode = options.mode;
  std::optional<ChatLoad> load;
  try {
    raise_fd_limit(options.clients + 16);
    load.emplace(std::move(options));
    bool ok = load->run();
    fmt::print("{{\"mode\":\"{}\",{},\"ok\":{}}}\n", mode, load->json(), ok);
    return ok ? 0 : 3;
  } catch (const std::exception& error) {
    fmt::print(stderr, "chat_load: error: {}\n", error.what());
    fmt::print("{{\"mode\":\"{}\",{}\"ok\":false,\"error\":\"{}\"}}\n", mode,
               load ? load->json() : std::string(), json_escape(error.what()));
    return 1;
  }
}
