// scale_load: one load worker of bench/run's `scale` scenario (issue 25). It holds N chat clients
// (N under the process's fd cap) connected from one loopback source address (--source
// 127.1.X.Y, so many workers are not limited to one address's ~28,000 ephemeral ports per server
// port) to several chat-servers sharing one room (--ports P1,P2,... round robin), and reports
// what every client received from the speaker that bench/run drives itself.
//
//   1. connect all clients (at most --window connects in flight), each until its welcome line;
//      a client closed, reset or refused before its welcome, or not welcomed within
//      --welcome-timeout, connects again (at most --retries times; each retry counted by reason,
//      so a run that needed them says so), and one still not welcomed then, or at
//      --setup-timeout, is given up; write every welcomed name to --names-file (one a line) and
//      print {"ready":true,"connected":N,"failed":F,"first_failure":"...","connect_s":...,
//      "retries":{...}} on stdout;
//   2. read every client; a line holding '|' followed by CLOCK_MONOTONIC nanoseconds is a
//      speaker's line: its delivery latency is kept (one count per millisecond);
//   3. when stdin says "done L" (the speaker sent L lines so far) wait until every client has L
//      of them or --timeout passes, then print one JSON object: clients with every line, lines
//      delivered and expected, this burst's latency histogram, when the burst's last line
//      arrived, and the first clients short of lines; then wait for the next "done L" (another
//      burst) until stdin closes.
//
// Loopback only; every phase has a deadline, and alarm() ends the process if the loop hangs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "core/loop/fd.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

[[noreturn]] void fail(const std::string& message) {
  throw std::runtime_error(message);
}

struct Options {
  std::vector<std::uint16_t> ports;
  std::string source = "127.0.0.1";
  int clients = 100;
  int window = 500;
  int retries = 3;              // fresh connects per client before the worker gives up
  double welcome_timeout = 30;  // s from connect() to the welcome line before a retry
  double setup_timeout = 120;
  double timeout = 60;
  std::string names_file;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    std::string_view value = argv[i + 1];
    if (flag == "--ports") {
      while (!value.empty()) {
        std::size_t comma = value.find(',');
        options.ports.push_back(
            static_cast<std::uint16_t>(std::stoi(std::string(value.substr(0, comma)))));
        value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
      }
    } else if (flag == "--source") {
      options.source = value;
    } else if (flag == "--clients") {
      options.clients = std::stoi(std::string(value));
    } else if (flag == "--window") {
      options.window = std::stoi(std::string(value));
    } else if (flag == "--retries") {
      options.retries = std::stoi(std::string(value));
    } else if (flag == "--welcome-timeout") {
      options.welcome_timeout = std::stod(std::string(value));
    } else if (flag == "--setup-timeout") {
      options.setup_timeout = std::stod(std::string(value));
    } else if (flag == "--timeout") {
      options.timeout = std::stod(std::string(value));
    } else if (flag == "--names-file") {
      options.names_file = value;
    } else {
      fail(fmt::format("unknown flag {}", flag));
    }
  }
  if (options.ports.empty()) fail("--ports is required");
  if (options.clients < 1) fail("--clients must be at least 1");
  return options;
}

in_addr loopback(const std::string& text) {
  in_addr address{};
  if (::inet_pton(AF_INET, text.c_str(), &address) != 1 || (ntohl(address.s_addr) >> 24) != 127)
    fail(fmt::format("{}: only IPv4 loopback addresses (127.0.0.0/8) are allowed", text));
  return address;
}

struct Client {
  mux::Fd fd;
  std::string partial;
  std::uint32_t lines = 0;      // speaker's lines received
  std::int64_t connect_ns = 0;  // when the current attempt began (before its welcome)
  std::uint8_t attempts = 0;
  bool welcomed = false;
  bool closed = false;
};

class Worker {
 public:
  explicit Worker(Options options) : options_(std::move(options)) {
    source_ = loopback(options_.source);
    server_ = loopback("127.0.0.1");
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) fail("epoll_create1");
    clients_.resize(static_cast<std::size_t>(options_.clients));
    buffer_.resize(64 * 1024);
  }

  void connect_all() {
    auto start = Clock::now();
    auto deadline = start + seconds(options_.setup_timeout);
    std::size_t next = 0;
    // Every client ends welcomed or given up (after --retries fresh connects, or at the setup
    // timeout): a run that could not connect everyone still measures the ones it did, and says
    // how many and why not.
    while (welcomed_ + closed_ < clients_.size()) {
      while (next < clients_.size() &&
             next - welcomed_ - closed_ < static_cast<std::size_t>(options_.window))
        start_connect(next++);
      if (Clock::now() > deadline) {
        for (std::size_t i = 0; i < next; ++i)
          if (!clients_[i].welcomed && !clients_[i].closed) close_client(i, "setup timeout");
        for (std::size_t i = next; i < clients_.size(); ++i) {
          clients_[i].closed = true;
          ++closed_;
        }
        break;
      }
      poll(50);
      retry_unwelcomed(next);
    }
    if (!options_.names_file.empty()) {
      std::ofstream names(options_.names_file);
      for (const std::string& name : names_)
        if (!name.empty()) names << name << '\n';
    }
    std::string why = first_close_;
    std::replace(why.begin(), why.end(), '"', '\'');
    fmt::print(
        "{{\"ready\":true,\"connected\":{},\"failed\":{},\"first_failure\":\"{}\","
        "\"connect_s\":{:.3f},\"retries\":{}}}\n",
        welcomed_, closed_, why, std::chrono::duration<double>(Clock::now() - start).count(),
        retries_json());
    std::fflush(stdout);
  }

  // One burst: reads until stdin says how many lines the speaker has sent so far, then until
  // every client has them. Nothing once stdin is closed (no more bursts).
  std::optional<std::string> measure() {
    if (!stdin_watched_) {
      epoll_event event{};
      event.events = EPOLLIN;
      event.data.u64 = kStdin;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, STDIN_FILENO, &event);
      stdin_watched_ = true;
    }
    std::uint64_t before = expected_lines_;
    auto idle_deadline = Clock::now() + seconds(3600);
    while (expected_lines_ == before && !stdin_closed_ && Clock::now() < idle_deadline)
      poll(100);
    if (expected_lines_ == before) return std::nullopt;
    auto deadline = Clock::now() + seconds(options_.timeout);
    while (complete_count() < clients_.size() && Clock::now() < deadline &&
           closed_ < clients_.size())
      poll(20);
    std::uint64_t delivered = 0;
    std::string short_clients;
    int listed = 0;
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      delivered += clients_[i].lines;
      if (clients_[i].lines < expected_lines_ && listed++ < 5)
        short_clients += fmt::format("{}\"{} got {}{}\"", listed > 1 ? "," : "", names_[i],
                                     clients_[i].lines, clients_[i].closed ? " (closed)" : "");
    }
    std::string histogram;
    for (const auto& [ms, count] : latency_ms_)
      histogram += fmt::format("{}\"{}\":{}", histogram.empty() ? "" : ",", ms, count);
    latency_ms_.clear();
    return fmt::format(
        "{{\"clients\":{},\"complete_clients\":{},\"closed\":{},\"expected\":{},\"delivered\":{},"
        "\"last_line_ns\":{},\"latency_ms\":{{{}}},\"short\":[{}]}}",
        clients_.size(), complete_count(), closed_,
        expected_lines_ * static_cast<std::uint64_t>(clients_.size()), delivered, last_line_ns_,
        histogram, short_clients);
  }

 private:
  static constexpr std::uint64_t kStdin = UINT64_MAX;

  static Clock::duration seconds(double value) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(value));
  }

  std::size_t complete_count() const { return expected_lines_ == 0 ? 0 : complete_; }

  std::string retries_json() const {
    std::string json;
    for (const auto& [reason, count] : retries_)
      json += fmt::format("{}\"{}\":{}", json.empty() ? "" : ",", reason, count);
    return "{" + json + "}";
  }

  // A connect that the kernel or the server dropped before the welcome is the load generator's
  // to retry, not a chat failure: on a machine at load 30 a listener's backlog overflows, a
  // SYN or its ACK is dropped, and a half-open connection (the client's ACK dropped, the
  // server's request gone) is never welcomed. Each retry is counted by its reason.
  bool retry(std::size_t index, const char* reason) {
    Client& client = clients_[index];
    if (client.welcomed || client.attempts > options_.retries) return false;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, client.fd.get(), nullptr);
    client.fd.reset();
    client.partial.clear();
    ++retries_[reason];
    start_connect(index);
    return true;
  }

  // Every ~second: clients connecting for longer than --welcome-timeout start again.
  void retry_unwelcomed(std::size_t started) {
    std::int64_t now = now_ns();
    if (now < next_sweep_ns_) return;
    next_sweep_ns_ = now + 1'000'000'000;
    auto limit = static_cast<std::int64_t>(options_.welcome_timeout * 1e9);
    for (std::size_t i = 0; i < started; ++i) {
      Client& client = clients_[i];
      if (!client.welcomed && !client.closed && now - client.connect_ns > limit &&
          !retry(i, "no welcome in time"))
        close_client(i, "never welcomed");
    }
  }

  void close_client(std::size_t index, const std::string& why) {
    Client& client = clients_[index];
    if (first_close_.empty()) first_close_ = fmt::format("client {}: {}", index, why);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, client.fd.get(), nullptr);
    client.fd.reset();
    client.closed = true;
    ++closed_;
  }

  void start_connect(std::size_t index) {
    Client& client = clients_[index];
    client.connect_ns = now_ns();
    ++client.attempts;
    client.fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP));
    if (!client.fd) throw std::system_error(errno, std::generic_category(), "socket");
    int one = 1;
    // The port is picked at connect(), per destination: a source address then serves ~28,000
    // connections to each server port, not 28,000 in all.
    ::setsockopt(client.fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr = source_;
    if (::bind(client.fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
      throw std::system_error(errno, std::generic_category(), "bind " + options_.source);
    sockaddr_in remote{};
    remote.sin_family = AF_INET;
    remote.sin_addr = server_;
    remote.sin_port = htons(options_.ports[index % options_.ports.size()]);
    if (::connect(client.fd.get(), reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0 &&
        errno != EINPROGRESS)
      throw std::system_error(errno, std::generic_category(), "connect");
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.u64 = index;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, client.fd.get(), &event) != 0)
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }

  void poll(int timeout_ms) {
    epoll_event events[512];
    int ready = ::epoll_wait(epoll_.get(), events, 512, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) return;
      throw std::system_error(errno, std::generic_category(), "epoll_wait");
    }
    for (int i = 0; i < ready; ++i) {
      if (events[i].data.u64 == kStdin) {
        read_stdin();
        continue;
      }
      read_client(events[i].data.u64);
    }
  }

  void read_stdin() {
    char text[256];
    ssize_t got = ::read(STDIN_FILENO, text, sizeof text - 1);
    if (got <= 0) {
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
      stdin_closed_ = true;
      return;
    }
    std::string_view command(text, static_cast<std::size_t>(got));
    if (command.starts_with("done ")) {
      std::uint64_t lines = 0;
      std::from_chars(command.data() + 5, command.data() + command.size(), lines);
      expected_lines_ = lines;
      complete_ = static_cast<std::size_t>(std::count_if(
          clients_.begin(), clients_.end(), [lines](const Client& c) { return c.lines >= lines; }));
    }
  }

  void read_client(std::size_t index) {
    Client& client = clients_[index];
    if (client.closed) return;
    for (int reads = 0; reads < 4; ++reads) {
      ssize_t got = ::recv(client.fd.get(), buffer_.data(), buffer_.size(), 0);
      if (got > 0) {
        std::int64_t at = now_ns();
        consume(index, std::string_view(buffer_.data(), static_cast<std::size_t>(got)), at);
        if (static_cast<std::size_t>(got) < buffer_.size()) return;
        continue;
      }
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
      const char* why = got == 0 ? "closed by the server" : std::strerror(errno);
      if (!retry(index, why)) close_client(index, why);
      return;
    }
  }

  void consume(std::size_t index, std::string_view bytes, std::int64_t at) {
    Client& client = clients_[index];
    while (!bytes.empty()) {
      std::size_t newline = bytes.find('\n');
      if (newline == std::string_view::npos) {
        client.partial.append(bytes);
        return;
      }
      if (client.partial.empty()) {
        on_line(index, bytes.substr(0, newline), at);
      } else {
        client.partial.append(bytes.substr(0, newline));
        std::string line = std::exchange(client.partial, {});
        on_line(index, line, at);
      }
      bytes.remove_prefix(newline + 1);
    }
  }

  void on_line(std::size_t index, std::string_view line, std::int64_t at) {
    Client& client = clients_[index];
    if (!client.welcomed) {
      constexpr std::string_view kWelcome = "* welcome, you are ";
      if (!line.starts_with(kWelcome)) return;
      std::string_view rest = line.substr(kWelcome.size());
      names_.resize(clients_.size());
      names_[index] = std::string(rest.substr(0, rest.find(" (type /help")));
      client.welcomed = true;
      ++welcomed_;
      return;
    }
    std::size_t bar = line.find('|');
    if (bar == std::string_view::npos || !line.starts_with("[")) return;
    std::int64_t sent = 0;
    auto [end, error] = std::from_chars(line.data() + bar + 1, line.data() + line.size(), sent);
    if (error != std::errc()) return;
    ++latency_ms_[std::max<std::int64_t>(0, (at - sent) / 1'000'000)];
    last_line_ns_ = std::max(last_line_ns_, at);
    if (++client.lines == expected_lines_) ++complete_;
  }

  Options options_;
  in_addr source_{};
  in_addr server_{};
  mux::Fd epoll_;
  std::vector<Client> clients_;
  std::vector<std::string> names_;
  std::vector<char> buffer_;
  std::size_t welcomed_ = 0;
  std::size_t closed_ = 0;
  std::size_t complete_ = 0;
  std::uint64_t expected_lines_ = 0;
  std::string first_close_;
  std::map<std::string, std::uint64_t> retries_;  // reason -> fresh connects it caused
  std::int64_t next_sweep_ns_ = 0;
  std::int64_t last_line_ns_ = 0;  // CLOCK_MONOTONIC of the latest speaker's line received
  bool stdin_watched_ = false;
  bool stdin_closed_ = false;
  std::map<std::int64_t, std::uint64_t> latency_ms_;
};

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  try {
    Options options = parse(argc, argv);
    ::alarm(static_cast<unsigned>(options.setup_timeout + options.timeout + 3700));
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur < static_cast<rlim_t>(options.clients) + 16)
      fail(fmt::format("the fd limit {} is below the {} clients asked for", limit.rlim_cur,
                       options.clients));
    Worker worker(std::move(options));
    worker.connect_all();
    while (std::optional<std::string> report = worker.measure()) {
      fmt::print("{}\n", *report);
      std::fflush(stdout);
    }
    return 0;
  } catch (const std::exception& error) {
    std::string what = error.what();
    std::replace(what.begin(), what.end(), '"', '\'');  // it goes out inside a JSON string
    fmt::print("{{\"error\":\"{}\"}}\n", what);
    fmt::print(stderr, "scale_load: error: {}\n", error.what());
    return 1;
  }
}
