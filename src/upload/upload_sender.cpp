#include "upload/upload_sender.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "core/base/interrupted.hpp"
#include "core/base/sanitize.hpp"
#include "core/base/units.hpp"
#include "core/tls/tls_stream.hpp"
#include "upload/progress_display.hpp"
#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

// Calls per wakeup before the loop gets a turn (progress redraws, an early ERR reply).
constexpr int kMaxSendsPerWakeup = 64;
constexpr std::size_t kMaxReplyLine = 4096;
constexpr std::chrono::milliseconds kRedrawInterval{100};
// How often a stalled send or a missing reply is looked for.
constexpr std::chrono::milliseconds kProgressCheckInterval{250};
// After DONE, how long the server's close is waited for (it closes at once; an older server
// after the client's half-close).
constexpr std::chrono::milliseconds kDoneWait{5000};
constexpr double kMinRateBurst = 1460;
// --retry waits this long before the first new try, doubling up to the most.
constexpr std::chrono::milliseconds kFirstRetryDelay{1000};
constexpr std::chrono::milliseconds kMaxRetryDelay{30'000};
// ERR busy (an earlier connection of this upload is still being received or saved) is waited
// out with or without --retry, as often as this within the stall timeout, 1 s, 2 s, 4 s...
constexpr unsigned kMaxBusyWaits = 6;

}  // namespace

UploadSender::UploadSender(UploadSource source, std::string source_label, std::string header_line,
                           Fd socket, std::unique_ptr<ByteStream> stream, std::string server,
                           ProgressDisplay& progress)
    : source_(std::move(source)),
      source_label_(std::move(source_label)),
      header_line_(std::move(header_line)),
      connection_(std::make_unique<Connection>(connections_, std::move(socket), std::move(stream),
                                               static_cast<Connection::Owner&>(*this))),
      server_(std::move(server)),
      progress_(progress),
      started_(EventLoop::Clock::now()) {}

void UploadSender::set_rate_limit(std::uint64_t bytes_per_second) {
  if (bytes_per_second == 0) {
    rate_limit_.reset();
    return;
  }
  // A tenth of a second of burst keeps the rate smooth at any scale; at least one TCP segment's
  // worth, so a tiny rate still sends whole segments rather than a byte at a time.
  double rate = static_cast<double>(bytes_per_second);
  rate_limit_.emplace(rate, std::max(rate / 10, kMinRateBurst), TokenBucket::Clock::now());
}

UploadSender::Result UploadSender::run() {
  if (progress_.style() == ProgressDisplay::Style::terminal) {
    loop_.add_periodic(kRedrawInterval, [this] { progress_.redraw(elapsed_seconds()); });
    loop_.on_signal(SIGWINCH, [this] {
      progress_.refit();
      progress_.redraw(elapsed_seconds());
    });
  }
  last_progress_ = EventLoop::Clock::now();
  if (stall_timeout_.count() > 0)
    loop_.add_periodic(kProgressCheckInterval, [this] { check_progress(); });
  loop_.on_signal(SIGINT, [this] { interrupt(SIGINT); });
  loop_.on_signal(SIGTERM, [this] { interrupt(SIGTERM); });
  awaiting_offer_ = resume_mode_ == ResumeMode::resume;
  if (!awaiting_offer_) start_reading(0, ContentHash());
  loop_.defer([this] { send_more(); });
  loop_.run();
  if (reader_) loop_.unwatch(reader_->ready_fd());
  if (failure_) {
    // The server ends a stream of unknown length at the half-close and saves what it got: a
    // stream cut short by an error or a signal must end with a reset instead, so it is not taken
    // for a complete one. (Only a sender killed outright still ends with an orderly close; the
    // hash check is what catches that: no OK is ever accepted for it.)
    if (sending_ && !source_.size && connection_) connection_->abort("cut short");
    progress_.clear();
    if (interrupted_by_ != 0) throw Interrupted(interrupted_by_, *failure_);
    throw std::runtime_error(*failure_);
  }
  return Result{sent_before_ + sent_, final_hash_, elapsed_seconds(), saved_name_, resumed_at_};
}

void UploadSender::set_retry(unsigned count, const ClientRedial* redial, std::string retry_header) {
  retry_limit_ = redial != nullptr ? count : 0;
  redial_ = redial;
  retry_header_ = std::move(retry_header);
  if (redial_ != nullptr) connections_.handshake_timeout = redial_->timeout();
}

bool UploadSender::can_retry(bool busy) const {
  unsigned used = busy ? busy_waits_ : retries_;
  unsigned limit = busy ? (redial_ != nullptr ? kMaxBusyWaits : 0) : retry_limit_;
  if (used >= limit || !source_.size || interrupted_by_ != 0) return false;
  return !retry_deadline_ || EventLoop::Clock::now() < *retry_deadline_;
}

// The try failed for a reason the next may not meet: the connection goes (with a reset, so a
// server still reading lets go of the upload at once), and a new one is made after a pause.
void UploadSender::schedule_retry(std::string why, bool busy) {
  auto now = EventLoop::Clock::now();
  if (!retry_deadline_ && stall_timeout_.count() > 0) retry_deadline_ = now + stall_timeout_;
  unsigned tries = busy ? ++busy_waits_ : ++retries_;
  std::chrono::milliseconds delay =
      std::min(kFirstRetryDelay * (1 << std::min(tries - 1, 5U)), kMaxRetryDelay);
  if (retry_deadline_) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*retry_deadline_ - now);
    delay = std::max(std::min(delay, left - std::chrono::milliseconds{100}),
                     std::chrono::milliseconds{1});
  }
  std::string when = format_duration(static_cast<double>(delay.count()) / 1000);
  progress_.note(busy ? fmt::format("{}; waiting for it to end: try {} of {} in {}", why, tries,
                                    kMaxBusyWaits, when)
                      : fmt::format("{}; retry {} of {} in {}", why, tries, retry_limit_, when));
  if (connection_) {
    connection_->abort("retrying");
    loop_.retire(std::move(connection_));
  }
  if (reader_) {
    loop_.unwatch(reader_->ready_fd());
    reader_.reset();
  }
  sent_before_ += sent_;
  sent_ = 0;
  chunk_sent_ = 0;
  waiting_for_chunk_ = false;
  reply_text_.clear();
  acked_.reset();  // the next server says again what it holds
  sending_ = true;
  header_line_ = retry_header_;
  header_sent_ = 0;
  awaiting_offer_ = resume_mode_ != ResumeMode::off;
  retry_timer_ = loop_.add_timer(delay, [this] {
    retry_timer_ = 0;
    redial();
  });
}

void UploadSender::redial() {
  connector_ = redial_->connect(loop_, [this](Fd socket, std::string error) {
    on_redialed(std::move(socket), std::move(error));
  });
}

void UploadSender::on_redialed(Fd socket, std::string error) {
  loop_.retire(std::move(connector_));
  if (!socket) return fail(std::move(error), true);
  int fd = socket.get();
  std::unique_ptr<ByteStream> stream = redial_->make_stream(fd);
  connection_ = std::make_unique<Connection>(connections_, std::move(socket), std::move(stream),
                                             static_cast<Connection::Owner&>(*this));
  last_progress_ = EventLoop::Clock::now();
  // A TLS handshake runs first; on_ready() follows it (a failed one ends in on_closed()).
  if (connection_->ready()) start_attempt();
}

// A new try on a ready connection: the header again (asking for the offer, when resumable) or
// the whole file from its start.
void UploadSender::start_attempt() {
  if (!sending_ || loop_.stopping() || !connection_) return;
  last_progress_ = EventLoop::Clock::now();
  if (!awaiting_offer_ && !reader_) {
    start_reading(0, ContentHash());
    progress_.start_at(0, elapsed_seconds());
  }
  send_more();
}

void UploadSender::start_reading(std::uint64_t from, ContentHash prefix) {
  resumed_at_ = from;
  if (reader_) loop_.unwatch(reader_->ready_fd());
  std::optional<std::uint64_t> size = source_.size;
  if (size) *size -= from;
  reader_.emplace(source_.file.get(), source_.offset + from, size, std::move(prefix));
  loop_.watch(reader_->ready_fd(), EPOLLIN, [this](std::uint32_t) { on_chunk_ready(); });
}

// The XXH3-128 of the file's first `length` bytes, read here on the loop's thread: only a
// resumed upload reads its prefix, once, to check the server holds the same bytes. nullopt when
// the file is shorter now or cannot be read.
std::optional<ContentHash> UploadSender::hash_of_prefix(std::uint64_t length) {
  ContentHash hash;
  std::vector<char> buffer(1 << 20);
  std::uint64_t done = 0;
  while (done < length) {
    std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), length - done));
    ssize_t got =
        ::pread(source_.file.get(), buffer.data(), want, static_cast<off_t>(source_.offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return std::nullopt;
    hash.update(buffer.data(), static_cast<std::size_t>(got));
    done += static_cast<std::uint64_t>(got);
  }
  return hash;
}

void UploadSender::on_resume_offer(const std::string& line) {
  std::optional<ResumeOffer> offer = parse_resume_offer(line);
  std::uint64_t size = source_.size.value_or(0);
  if (!offer || offer->offset > size) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 resume offer: \"{}\"", server_,
                     printable_reply(line)));
    return;
  }
  awaiting_offer_ = false;
  std::uint64_t from = 0;
  ContentHash prefix;
  if (offer->offset > 0) {
    std::optional<ContentHash> ours = hash_of_prefix(offer->offset);
    if (ours && ours->hex() == offer->prefix_hash) {
      from = offer->offset;
      prefix = std::move(*ours);
      // All of it: saved by an earlier run whose OK was lost (the server's completion record).
      progress_.note(from == size ? fmt::format("{} is on the server already ({}, verified): "
                                                "nothing to send",
                                                source_label_, format_bytes(size))
                                  : fmt::format("Resumed at {} of {}", format_bytes(from),
                                                format_bytes(size)));
    } else {
      progress_.note(fmt::format(
          "{} changed since the interrupted upload ({} of it were on the server): starting over",
          source_label_, format_bytes(offer->offset)));
    }
  }
  start_reading(from, std::move(prefix));
  progress_.start_at(from, elapsed_seconds());
  last_progress_ = EventLoop::Clock::now();  // reading the prefix was ours, not the server's
  header_line_ = format_resume_from(from);
  header_sent_ = 0;
  loop_.defer([this] { send_more(); });
}

void UploadSender::send_more() {
  if (!sending_ || rate_paused_ || loop_.stopping() || !connection_ || !connection_->ready())
    return;
  for (int calls = 0; calls < kMaxSendsPerWakeup; ++calls) {
    // The header and the first bytes of the file go out in one writev: one segment (one TLS
    // record) for both, as the server reads them.
    iovec chunks[2];
    int count = 0;
    std::size_t header_left = header_line_.size() - header_sent_;
    if (header_left > 0)
      chunks[count++] = {const_cast<char*>(header_line_.data() + header_sent_), header_left};
    if (awaiting_offer_ && header_left == 0) return;  // nothing more until the RESUME line
    std::optional<std::string_view> chunk = awaiting_offer_ ? std::nullopt : reader_->front();
    std::size_t allowance = rate_allowance();
    if (chunk && allowance == 0 && header_left == 0) return pause_for_rate();
    if (chunk && allowance > 0) {
      chunk->remove_prefix(chunk_sent_);
      // Only what the bucket allows: the rest of the chunk stays for the next turn.
      if (chunk->size() > allowance) *chunk = chunk->substr(0, allowance);
      chunks[count++] = {const_cast<char*>(chunk->data()), chunk->size()};
    } else if (header_left == 0) {
      if (reader_->at_end()) {
        finish_sending();
      } else {
        wait_for_chunk();
      }
      return;
    }
    std::size_t wanted = chunks[0].iov_len + (count > 1 ? chunks[1].iov_len : 0);
    IoResult result = connection_->send_batch(std::span<const iovec>(chunks, count));
    if (result.blocked()) return;  // on_writable() goes on
    if (!result.ok()) return on_send_error(result);
    std::size_t written = result.bytes;
    std::size_t to_header = std::min(written, header_left);
    header_sent_ += to_header;
    written -= to_header;
    if (written == 0) {
      // An empty file is complete with its header: the server replies OK at once, possibly
      // before the reader has said it is at the end.
      if (header_sent_ == header_line_.size() && !awaiting_offer_ && source_.size &&
          total_sent() == *source_.size) {
        finish_sending();
        return;
      }
      continue;
    }
    sent_ += written;
    chunk_sent_ += written;
    retry_deadline_.reset();  // moving again: a later failure gets a window of its own
    last_progress_ = EventLoop::Clock::now();
    if (rate_limit_) rate_limit_->take(static_cast<double>(written), TokenBucket::Clock::now());
    if (chunk_sent_ == reader_->front()->size()) {  // the front chunk is all sent
      reader_->pop_front();
      chunk_sent_ = 0;
    }
    progress_.update(acked_.value_or(total_sent()), elapsed_seconds());
    // A known size ends with its last byte: the server may reply OK before the reader has
    // even said it is done.
    if (source_.size && total_sent() == *source_.size) {
      finish_sending();
      return;
    }
    if (written + to_header < wanted) return;  // the socket is full: on_writable() goes on
  }
  // Calls per wakeup used up: the rest after the loop's turn (progress, an early reply), which
  // a zero timer gives it (deferred work would run before any event).
  loop_.add_timer(std::chrono::milliseconds{0}, [this] { send_more(); });
}

std::size_t UploadSender::rate_allowance() {
  if (!rate_limit_) return SIZE_MAX;
  double level = rate_limit_->level(TokenBucket::Clock::now());
  return level < 1 ? 0 : static_cast<std::size_t>(level);
}

// The loop's timer, not a sleep: the reply (an early ERR), signals and redraws are still served.
void UploadSender::pause_for_rate() {
  rate_paused_ = true;
  // Wait for a quarter of the burst rather than the first byte: fewer, larger sends.
  auto wait = rate_limit_->time_until(rate_limit_->burst() / 4, TokenBucket::Clock::now());
  auto delay = std::chrono::ceil<std::chrono::milliseconds>(wait);
  loop_.add_timer(std::max(delay, std::chrono::milliseconds{1}),
                  [this] { resume_after_rate_pause(); });
}

void UploadSender::resume_after_rate_pause() {
  rate_paused_ = false;
  if (!sending_ || loop_.stopping() || waiting_for_chunk_) return;
  last_progress_ = EventLoop::Clock::now();  // the pause was ours, not the server's
  send_more();
}

void UploadSender::wait_for_chunk() {
  std::string why = reader_->failure();
  if (!why.empty()) {
    fail(fmt::format("{}: {}", source_label_, why));
    return;
  }
  // Nothing to send until the reader signals (the connection stops asking for writability).
  waiting_for_chunk_ = true;
}

void UploadSender::on_chunk_ready() {
  reader_->clear_ready();
  if (!waiting_for_chunk_ || !sending_ || loop_.stopping()) return;
  waiting_for_chunk_ = false;
  if (rate_paused_) return;  // the rate timer goes on
  send_more();
}

void UploadSender::finish_sending() {
  sending_ = false;
  final_hash_ = reader_->hash_hex();
  last_progress_ = EventLoop::Clock::now();  // the reply gets the whole stall timeout
  // A resumable upload (confirm=1) says DONE after the OK: its known size ends it, not the
  // half-close, which waits until then.
  if (resume_mode_ != ResumeMode::off) return;
  // The end of the upload: TLS close_notify then FIN, or just FIN, as the server reads it; the
  // reply is still read.
  connection_->shutdown_output();
}

// A valid OK: with confirm=1 the server keeps a completion record until it reads DONE, so the
// client waits for the server to close after it (bounded by kDoneWait); the upload is confirmed
// either way.
void UploadSender::confirm_reply(bool server_asked) {
  if (resume_mode_ == ResumeMode::off) return loop_.stop();
  if (server_asked) connection_->send(kDoneLine);
  connection_->shutdown_output();
  if (!server_asked) return loop_.stop();
  confirming_ = true;
  loop_.add_timer(kDoneWait, [this] { loop_.stop(); });
}

void UploadSender::check_progress() {
  if (confirming_) return;  // confirmed already; kDoneWait bounds the rest
  // Between tries the retry timer and the Connector's deadline bound the wait.
  if (waiting_for_chunk_ || rate_paused_ ||
      !connection_) {  // our own disk or --limit-rate, not the server
    last_progress_ = EventLoop::Clock::now();
    return;
  }
  if (EventLoop::Clock::now() - last_progress_ < stall_timeout_) return;
  double stall_seconds = static_cast<double>(stall_timeout_.count()) / 1000;
  bool header_out = header_sent_ == header_line_.size();
  if (sending_ && !(awaiting_offer_ && header_out)) {
    std::string sent = source_.size
                           ? fmt::format("{} of {} bytes sent", total_sent(), *source_.size)
                           : fmt::format("{} bytes sent", sent_);
    std::string message =
        fmt::format("{} took no data for {:g} s ({})", server_, stall_seconds, sent);
    // Without --retry the message says the upload ends; with it, fail() says how many tries.
    if (retry_limit_ == 0) message += "; giving up";
    fail(std::move(message), true);
  } else {
    fail(fmt::format("no reply from {} within {:g} s", server_, stall_seconds), true);
  }
}

void UploadSender::on_send_error(const IoResult& error) {
  // A server that refuses an upload replies ERR and closes: the reason is already here.
  connection_->read_pending();
  if (!loop_.stopping() && connection_)
    fail(fmt::format("send to {}: {}", server_, error.describe()), true);
}

// Readable while still sending means the server answered early: usually an ERR refusal.
void UploadSender::on_data(std::string_view bytes) {
  if (loop_.stopping() || !connection_ || confirming_) return;
  reply_text_.append(bytes);
  std::size_t newline = reply_text_.find('\n');
  while (newline != std::string::npos) {
    std::string line = reply_text_.substr(0, newline);
    bool offer = awaiting_offer_ && line.starts_with("RESUME ");
    if (!offer && !line.starts_with("ACK ")) break;  // the reply
    reply_text_.erase(0, newline + 1);
    if (offer) {
      on_resume_offer(line);
    } else {
      on_ack(line);
    }
    if (loop_.stopping() || !connection_) return;
    newline = reply_text_.find('\n');
  }
  if (newline != std::string::npos) {
    check_reply(reply_text_.substr(0, newline));
  } else if (reply_text_.size() > kMaxReplyLine) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 reply", server_));
  }
}

// `ACK <offset>`: the server holds the first offset bytes safely. From the first one on the
// progress shows these bytes, not the ones handed to the socket.
void UploadSender::on_ack(const std::string& line) {
  std::optional<std::uint64_t> offset = parse_ack(line);
  if (!offset || (source_.size && *offset > *source_.size)) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 reply: \"{}\"", server_,
                     printable_reply(line)));
    return;
  }
  if (!acked_) {
    progress_.start_at(*offset, elapsed_seconds());  // the rate from here on is the server's
  } else if (*offset <= *acked_) {
    return;
  }
  acked_ = *offset;
  progress_.update(*acked_, elapsed_seconds());
}

void UploadSender::on_end_of_input() {
  if (confirming_) return loop_.stop();  // the server read DONE
  if (!connection_) return;              // a try given up already
  fail(fmt::format("{} closed the connection without a reply", server_), true);
}

void UploadSender::on_closed(std::string_view reason) {
  if (confirming_) return loop_.stop();
  if (!connection_) return;
  const IoResult& failure = connection_->failure();
  fail(fmt::format(
           "connection to {}: {}", server_,
           failure.status == IoResult::Status::failed ? failure.describe() : std::string(reason)),
       true);
}

void UploadSender::check_reply(const std::string& line) {
  std::optional<UploadReply> reply = parse_reply_line(line);
  if (!reply && line.starts_with("* welcome, you are ")) {
    // A chat-server greets every newcomer before it sends anything: the wrong port.
    fail(
        fmt::format("{} is a chat-server, not an upload-server (it sent a chat welcome)", server_));
  } else if (!reply && line + '\n' == kTlsPortHint) {
    fail(fmt::format("{} speaks TLS on this port; connect with --tls", server_));
  } else if (!reply) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 reply: \"{}\"", server_,
                     printable_reply(line)));
  } else if (!reply->ok) {
    std::string message =
        fmt::format("{} refused the upload: {}", server_, printable_reply(reply->reason));
    // An earlier run's connection still holds this upload (a fork-mode child still saving it,
    // a checkpoint still being flushed): it ends soon, and then this one can go on.
    if (busy_refusal(reply->reason) && !loop_.stopping() && can_retry(true))
      return schedule_retry(std::move(message), true);
    fail(std::move(message), transient_refusal(reply->reason));
  } else if (sending_ && source_.size) {
    fail(fmt::format("{} replied OK after {} of {} bytes", server_, total_sent(), *source_.size));
  } else if (sending_) {
    fail(fmt::format("{} replied OK after {} bytes, before the end of {}", server_, sent_,
                     source_label_));
  } else if (reply->bytes != total_sent() || reply->hash != final_hash_) {
    fail(
        fmt::format("verification failed: {} received {} bytes with XXH3-128 {}, sent {} bytes "
                    "with XXH3-128 {}",
                    server_, reply->bytes, reply->hash, total_sent(), final_hash_));
  } else {
    // The name is the server's text: shown to a person, so no control or bidi characters.
    if (reply->saved_name) saved_name_ = sanitized(*reply->saved_name);
    // OK acknowledges everything: the progress reaches the end before the summary.
    progress_.update(total_sent(), elapsed_seconds());
    confirm_reply(reply->confirm);
  }
}

void UploadSender::interrupt(int signo) {
  if (loop_.stopping()) return;
  interrupted_by_ = signo;
  // How far it got, so the person knows what a retry has to send again.
  std::string total = source_.size ? fmt::format(" of {}", format_bytes(*source_.size)) : "";
  std::string kept =
      resume_mode_ != ResumeMode::off
          ? "run the same command again to resume"
          : (source_.size ? "the server keeps nothing of an incomplete upload"
                          : "a stream cannot resume: the server keeps nothing of it");
  fail(fmt::format("interrupted by {} after sending {}{} to {} in {}; {}", signal_name(signo),
                   format_bytes(total_sent()), total, server_, format_duration(elapsed_seconds()),
                   kept));
}

void UploadSender::fail(std::string message, bool transient) {
  if (loop_.stopping()) return;  // the first failure is the one worth telling
  if (transient && can_retry()) return schedule_retry(std::move(message));
  if (transient && retries_ == 0 && busy_waits_ > 0 && !can_retry()) {
    message += fmt::format(" (gave up after waiting {} {})", busy_waits_,
                           busy_waits_ == 1 ? "time" : "times");
  } else if (transient && retries_ > 0) {
    // Why no further try: the count, or no progress for the stall timeout since the failure.
    std::string why = retries_ < retry_limit_
                          ? fmt::format(": no progress for {:g} s",
                                        static_cast<double>(stall_timeout_.count()) / 1000)
                          : "";
    message +=
        fmt::format(" (gave up after {} {}{})", retries_, retries_ == 1 ? "retry" : "retries", why);
  }
  failure_ = std::move(message);
  loop_.stop();
}

double UploadSender::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
