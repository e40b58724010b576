#include "upload/upload_client.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <optional>

#include "core/base/interrupted.hpp"
#include "core/base/units.hpp"
#include "core/loop/net.hpp"
#include "core/service/client_link.hpp"
#include "core/tls/tls_context.hpp"
#include "upload/batch_sender.hpp"
#include "upload/progress_display.hpp"
#include "upload/upload_key.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_sender.hpp"
#include "upload/upload_source.hpp"
#include "upload/upload_tree.hpp"

namespace mux {

namespace {

constexpr std::chrono::milliseconds kFirstRetryDelay{1000};
constexpr std::chrono::milliseconds kMaxRetryDelay{30'000};
// ERR busy (an earlier run's connection of this batch still being saved) is waited out with or
// without --retry, as often as this within --timeout: 1 s, 2 s, 4 s...
constexpr std::uint64_t kMaxBusyWaits = 6;

// Prints `note` (unless empty) and waits `delay` with SIGINT and SIGTERM held back from before
// the note appears, so either ends the wait at once (and the command with 128+N) instead of
// killing the process outright. `interrupted` says what was done ("; nothing was sent" when
// empty).
void wait_unless_interrupted(std::chrono::milliseconds delay, const std::string& server,
                             const std::string& note, const std::string& interrupted = {}) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigset_t before;
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, &before);
  if (!note.empty()) {
    fmt::print(stdout, "{}\n", note);
    std::fflush(stdout);
  }
  auto until = std::chrono::steady_clock::now() + delay;
  int signo = -1;
  while (signo < 0) {
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    timespec wait{static_cast<time_t>(left.count() / 1'000'000'000),
                  static_cast<long>(left.count() % 1'000'000'000)};
    signo = ::sigtimedwait(&stop_signals, nullptr, &wait);
    if (signo < 0 && errno != EINTR) break;  // EAGAIN: the time is up
  }
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  if (signo > 0) {
    throw Interrupted(signo, fmt::format("interrupted by {} while waiting to connect to {}; {}",
                                         signal_name(signo), server,
                                         interrupted.empty() ? "nothing was sent" : interrupted));
  }
}

// --retry's count and time for one run of the command: the first connect and, in a batch, every
// reconnect after a drop take from the same N; no try starts once --timeout has passed since a
// failure without a connection made.
class RetryBudget {
 public:
  explicit RetryBudget(const UploadClientOptions& options) : options_(options) {}

  // After the transient failure `error`: prints the try's note and waits (1 s, doubling up to
  // 30 s), or throws the error, with "(gave up after N retries)" once any was made.
  // `busy`: the server answered ERR busy, waited for kMaxBusyWaits times of its own.
  void wait_or_give_up(const std::runtime_error& error, const std::string& server,
                       const std::string& interrupted = {}, bool busy = false) {
    auto now = std::chrono::steady_clock::now();
    if (!deadline_ && options_.timeout.count() > 0) deadline_ = now + options_.timeout;
    bool out_of_time = deadline_ && now >= *deadline_;
    if (busy && busy_waits_ < kMaxBusyWaits && !out_of_time)
      return wait_while_busy(error, server, interrupted);
    if (used_ >= options_.retry || out_of_time) {
      if (used_ == 0 && busy_waits_ > 0) {
        throw std::runtime_error(fmt::format("{} (gave up after waiting {} {})", error.what(),
                                             busy_waits_, busy_waits_ == 1 ? "time" : "times"));
      }
      if (used_ == 0) throw std::runtime_error(error.what());
      std::string why = out_of_time
                            ? fmt::format(": no progress for {:g} s",
                                          static_cast<double>(options_.timeout.count()) / 1000)
                            : std::string();
      throw std::runtime_error(fmt::format("{} (gave up after {} {}{})", error.what(), used_,
                                           used_ == 1 ? "retry" : "retries", why));
    }
    std::chrono::milliseconds delay =
        std::min(kFirstRetryDelay * (1 << std::min<std::uint64_t>(used_, 5)), kMaxRetryDelay);
    if (deadline_) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline_ - now);
      delay = std::max(std::min(delay, left - std::chrono::milliseconds{100}),
                       std::chrono::milliseconds{1});
    }
    ++used_;
    // As a dropped upload's retry says it (the progress's note line, on stdout).
    std::string note =
        options_.common.quiet
            ? std::string()
            : fmt::format("{}; retry {} of {} in {}", error.what(), used_, options_.retry,
                          format_duration(static_cast<double>(delay.count()) / 1000));
    wait_unless_interrupted(delay, server, note, interrupted);
  }
  // A connection was made: a later failure gets a --timeout window of its own.
  void connected() noexcept { deadline_.reset(); }

 private:
  void wait_while_busy(const std::runtime_error& error, const std::string& server,
                       const std::string& interrupted) {
    ++busy_waits_;
    std::chrono::milliseconds delay = std::min(
        kFirstRetryDelay * (1 << std::min<std::uint64_t>(busy_waits_ - 1, 5)), kMaxRetryDelay);
    if (deadline_) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline_ -
                                                               std::chrono::steady_clock::now());
      delay = std::max(std::min(delay, left - std::chrono::milliseconds{100}),
                       std::chrono::milliseconds{1});
    }
    std::string note =
        options_.common.quiet
            ? std::string()
            : fmt::format("{}; waiting for it to end: try {} of {} in {}", error.what(),
                          busy_waits_, kMaxBusyWaits,
                          format_duration(static_cast<double>(delay.count()) / 1000));
    wait_unless_interrupted(delay, server, note, interrupted);
  }

  const UploadClientOptions& options_;
  std::uint64_t used_ = 0;
  std::uint64_t busy_waits_ = 0;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
};

// --retry covers the first connect too: refused, unreachable, timed out or a failed TLS
// handshake is tried again as a dropped upload is (1 s, doubling up to 30 s, at most N times,
// within --timeout of the first failure). A bad --tls-* or --token-file is not: it is checked
// once, before any try.
ClientLink connect_with_retry(const UploadClientOptions& options, RetryBudget& budget,
                              const std::string& interrupted = {}) {
  std::uint16_t port = client_port(options.link, options.common.port);
  if (options.retry == 0) return open_client_link(options.common.host, port, options.link);
  (void)check_client_link(options.common.host, options.link);
  std::string server = fmt::format("{}:{}", options.common.host, port);
  for (;;) {
    try {
      ClientLink link = open_client_link(options.common.host, port, options.link);
      budget.connected();
      return link;
    } catch (const TlsConfigError&) {
      throw;
    } catch (const std::runtime_error& error) {
      budget.wait_or_give_up(error, server, interrupted);
    }
  }
}

bool is_directory(const std::string& path) {
  struct stat info {};
  return path != "-" && ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool is_batch(const UploadClientOptions& options) {
  return options.files.size() > 1 || is_directory(options.file);
}

UploadTree batch_tree(const UploadClientOptions& options) {
  std::vector<std::string> roots =
      options.files.empty() ? std::vector<std::string>{options.file} : options.files;
  for (const std::string& root : roots) {
    if (root == "-") {
      throw std::runtime_error(
          "--file -: standard input cannot be sent with other files or directories");
    }
  }
  if (!options.name.empty()) {
    throw std::runtime_error(
        "--name names one file: with several files or a directory, each "
        "keeps its own name");
  }
  return walk_upload_tree(roots);
}

ProgressDisplay::Style progress_style(const UploadClientOptions& options) {
  if (options.common.quiet) return ProgressDisplay::Style::silent;
  if (::isatty(STDOUT_FILENO) == 1) return ProgressDisplay::Style::terminal;
  return ProgressDisplay::Style::lines;
}

// A directory, or several --file: one connection, every file pipelined (batch=1).
int run_batch_upload(const UploadClientOptions& options,
                     std::chrono::steady_clock::time_point started) {
  UploadTree tree = batch_tree(options);
  for (const std::string& warning : tree.warnings)
    fmt::print(stderr, "mux: warning: {}\n", warning);
  std::uint16_t port = client_port(options.link, options.common.port);
  RetryBudget budget(options);
  ClientLink link = connect_with_retry(options, budget);
  // One key for the batch (each large file's own is derived from it and its path), told by the
  // first root's device and inode and every root's name.
  std::optional<UploadKey> key;
  try {
    std::string roots;
    for (const TreeEntry& entry : tree.entries) {
      if (entry.path.find('/') == std::string::npos) roots += "/" + entry.path;
    }
    Fd first(::open(tree.entries.front().source.c_str(), O_RDONLY | O_CLOEXEC));
    if (!first) throw std::runtime_error(tree.entries.front().source + ": cannot open");
    key = upload_key_for(fmt::format("{}:{}", options.common.host, port), first.get(),
                         "batch:" + roots);
  } catch (const std::exception& error) {
    fmt::print(stderr, "mux: warning: {}; this upload cannot resume\n", error.what());
  }
  bool ask = key && key->reused && !options.no_resume;
  BatchJournal journal(key ? key->path + ".files" : std::string(), ask);
  if (options.common.verbose) {
    fmt::print(stderr, "connected to {}; sending {} files ({} bytes) in {} entries\n", link.server,
               tree.files, tree.bytes, tree.entries.size());
    if (!link.session.empty()) fmt::print(stderr, "TLS: {}\n", link.session);
  }
  ProgressDisplay progress(progress_style(options), tree.bytes, stdout);
  // --retry: a batch cut short (the connection dropped, the server restarted, busy) connects
  // again and goes on as a new run of the command would: the files this run confirmed are in
  // the journal (not sent again), a large file it started asks for the server's offer.
  BatchSender::Result result;
  for (bool retrying = false;; retrying = true) {
    BatchSender sender(tree, journal, key ? key->key : std::string(), ask || retrying, link.token,
                       std::move(link.socket), std::move(link.stream), link.server, progress);
    sender.set_stall_timeout(options.timeout);
    sender.set_rate_limit(options.limit_rate);
    sender.set_may_retry(options.retry > 0);
    if (retrying) sender.set_retrying();
    std::optional<std::string> dropped;
    bool busy = false;
    try {
      (void)sender.run();
    } catch (const BatchSender::Dropped& error) {
      if (options.retry == 0 && !error.busy()) throw;
      dropped = error.what();
      busy = error.busy();
    }
    if (!retrying) result.skipped = sender.result().skipped;
    result.files += sender.result().files;
    result.bytes += sender.result().bytes;
    if (!dropped) break;
    progress.clear();
    std::string interrupted =
        fmt::format("{} of {} files confirmed; {}", result.skipped + result.files, tree.files,
                    key ? "run the same command again to resume"
                        : "files not confirmed are sent again by the next run");
    budget.wait_or_give_up(std::runtime_error(*dropped), link.server, interrupted, busy);
    link = connect_with_retry(options, budget, interrupted);
  }
  journal.remove();
  if (key) forget_upload_key(*key);  // confirmed: the next upload of these files is a new one
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  progress.finish(format_batch_summary(result.files, result.bytes, seconds, result.skipped));
  return 0;
}

}  // namespace

std::string check_upload_client(const UploadClientOptions& options) {
  std::string checked;
  if (is_batch(options)) {
    UploadTree tree = batch_tree(options);
    checked = fmt::format("--file: {} files in {} entries", tree.files, tree.entries.size());
    std::string link = check_client_link(options.common.host, options.link);
    if (!link.empty()) checked += ", " + link;
    return checked;
  }
  // stdin is not read: the data to send is not there yet when a unit or script checks.
  if (options.file != "-") {
    (void)open_upload_source(options.file);
    checked = fmt::format("--file {}", options.file);
  }
  std::string link = check_client_link(options.common.host, options.link);
  if (!link.empty()) checked += (checked.empty() ? "" : ", ") + link;
  return checked;
}

int run_upload_client(const UploadClientOptions& options) {
  // The summary's time is the whole operation as the person waited for it: opening, connecting,
  // sending (however slowly a pipe delivers) and the server's confirmation.
  auto started = std::chrono::steady_clock::now();
  ignore_sigpipe();
  if (is_batch(options)) return run_batch_upload(options, started);
  // Before connecting: a bad path must not cost the server a connection.
  UploadSource source = open_upload_source(options.file);
  std::string name = options.name.empty() ? source.default_name : options.name;
  std::optional<std::uint64_t> size = source.size;
  RetryBudget budget(options);
  ClientLink link = connect_with_retry(options, budget);
  // A named file can resume (a stream cannot: its bytes are gone once sent); its key says, on a
  // later run, that the server's partial upload is ours.
  std::optional<UploadKey> key;
  if (source.size && options.file != "-") {
    try {
      key = upload_key_for(
          fmt::format("{}:{}", options.common.host, client_port(options.link, options.common.port)),
          source.file.get(), name);
    } catch (const std::exception& error) {
      fmt::print(stderr, "mux: warning: {}; this upload cannot resume\n", error.what());
    }
  }
  // reply-name=1: the summary can say where the server saved the file.
  // Only a key from an earlier try asks what the server kept: a first try sends at once, as to
  // any server.
  bool ask = key && key->reused && !options.no_resume;
  std::string link_token = link.token;
  // confirm=1: a file the server saved but whose OK this client never read is remembered (see
  // kConfirmField), so running the command again does not save it twice.
  std::string header = format_header_line(source.size, name, link.token, true,
                                          key ? key->key : std::string(), ask, true, true);
  std::string server = link.server;
  if (options.common.verbose) {
    // stderr: stdout carries only the progress and the summary, which scripts may parse.
    std::string amount = size ? fmt::format("{} bytes", *size) : "a stream of unknown length";
    fmt::print(stderr, "connected to {}; sending {} as \"{}\"\n", server, amount, name);
    if (!link.session.empty()) fmt::print(stderr, "TLS: {}\n", link.session);
  }
  ProgressDisplay::Style style = ProgressDisplay::Style::lines;
  if (options.common.quiet) {
    style = ProgressDisplay::Style::silent;
  } else if (::isatty(STDOUT_FILENO) == 1) {
    style = ProgressDisplay::Style::terminal;
  }
  ProgressDisplay progress(style, size, stdout);
  UploadSender sender(std::move(source), options.file == "-" ? "standard input" : options.file,
                      std::move(header), std::move(link.socket), std::move(link.stream), server,
                      progress);
  sender.set_stall_timeout(options.timeout);
  sender.set_rate_limit(options.limit_rate);
  if (key) {
    sender.set_resume(ask ? UploadSender::ResumeMode::resume : UploadSender::ResumeMode::fresh);
  } else if (options.common.verbose && !size) {
    fmt::print(stderr, "a stream from {} cannot resume if it is interrupted\n",
               options.file == "-" ? "standard input" : options.file);
  }
  // --retry: the same header, asking for the server's offer when the upload can resume. A
  // resumable upload may also meet ERR busy (an earlier run's connection still saving it),
  // which it waits out with or without --retry.
  std::optional<ClientRedial> redial;
  if ((options.retry > 0 || key) && size) {
    redial.emplace(options.common.host, client_port(options.link, options.common.port),
                   options.link);
    sender.set_retry(
        static_cast<unsigned>(options.retry), &*redial,
        format_header_line(size, name, link_token, true, key ? key->key : std::string(),
                           key.has_value(), true, true));
  } else if (options.retry > 0 && options.common.verbose) {
    fmt::print(stderr, "a stream from {} cannot be sent again: --retry does not apply\n",
               options.file == "-" ? "standard input" : options.file);
  }
  UploadSender::Result result = sender.run();
  if (key) forget_upload_key(*key);  // confirmed: the next upload of this file is a new one
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::optional<std::uint64_t> whole;
  // Resumed, or sent more than once by --retry: the summary says what this run sent of the whole.
  if (size && (result.resumed_at > 0 || result.bytes != *size)) whole = *size;
  progress.finish(
      format_upload_summary(result.bytes, seconds, result.hash, result.saved_name, whole));
  return 0;
}

}  // namespace mux
