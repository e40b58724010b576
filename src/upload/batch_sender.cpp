#include "upload/batch_sender.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "core/base/interrupted.hpp"
#include "core/base/units.hpp"
#include "core/loop/output_queue.hpp"
#include "upload/progress_display.hpp"
#include "upload/resume_record.hpp"
#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

// Queued and not yet written: past this, wait for the socket (on_writable) before adding more.
constexpr std::size_t kSendWindow = 4 << 20;
// Files sent and not yet replied to: enough to cover a --sync full group sync of many files.
constexpr std::size_t kMaxPending = 8192;
// After DONE, how long the server's close is waited for.
constexpr std::chrono::milliseconds kDoneWait{5000};
constexpr std::size_t kChunk = 1 << 20;
constexpr std::size_t kMaxReplyLine = 4096;
constexpr std::chrono::milliseconds kRedrawInterval{100};
constexpr std::chrono::milliseconds kProgressCheckInterval{250};
// --limit-rate: sending may run this far ahead of the pace before it waits.
constexpr std::chrono::milliseconds kRateSlack{100};

// Reads exactly `length` bytes at `offset` into `into`; false when the file ended first or a
// read failed (errno says which; 0: shorter).
bool read_exactly(int fd, char* into, std::size_t length, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < length) {
    ssize_t got = ::pread(fd, into + done, length - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = 0;
      return false;
    }
    done += static_cast<std::size_t>(got);
  }
  return true;
}

std::string read_failure(const TreeEntry& entry) {
  if (errno == 0) return fmt::format("{}: the file got shorter while it was sent", entry.source);
  return fmt::format("{}: {}", entry.source, std::generic_category().message(errno));
}

}  // namespace

BatchSender::BatchSender(const UploadTree& tree, BatchJournal& journal, std::string batch_key,
                         bool ask, std::string token, Fd socket, std::unique_ptr<ByteStream> stream,
                         std::string server, ProgressDisplay& progress)
    : tree_(tree),
      journal_(journal),
      batch_key_(std::move(batch_key)),
      ask_(ask),
      token_(std::move(token)),
      connection_(std::make_unique<Connection>(connections_, std::move(socket), std::move(stream),
                                               static_cast<Connection::Owner&>(*this))),
      server_(std::move(server)),
      progress_(progress),
      started_(EventLoop::Clock::now()),
      last_progress_(started_),
      next_send_(started_) {}

BatchSender::Result BatchSender::run() {
  // Files an earlier run of the same command had confirmed are not sent again.
  if (ask_) {
    for (const TreeEntry& entry : tree_.entries) {
      if (entry.directory || !journal_.confirmed(entry)) continue;
      ++result_.skipped;
      ++confirmed_files_;
      confirmed_bytes_ += entry.size;
    }
    if (result_.skipped > 0 && !retrying_) {
      progress_.note(fmt::format("{} of {} files were confirmed by an earlier run: not sent again",
                                 result_.skipped, tree_.files));
    }
  }
  progress_.set_files(confirmed_files_, tree_.files);
  progress_.start_at(confirmed_bytes_, 0);
  if (progress_.style() == ProgressDisplay::Style::terminal) {
    loop_.add_periodic(kRedrawInterval, [this] { progress_.redraw(elapsed_seconds()); });
  }
  if (stall_timeout_.count() > 0) {
    loop_.add_periodic(kProgressCheckInterval, [this] { check_progress(); });
  }
  loop_.on_signal(SIGINT, [this] { interrupt(SIGINT); });
  loop_.on_signal(SIGTERM, [this] { interrupt(SIGTERM); });
  loop_.defer([this] { pump(); });
  loop_.run();
  if (failure_) {
    progress_.clear();
    if (interrupted_by_ != 0) throw Interrupted(interrupted_by_, *failure_);
    if (transient_) throw Dropped(*failure_, busy_);
    throw std::runtime_error(*failure_);
  }
  return result_;
}

std::string BatchSender::file_key(const TreeEntry& entry) const {
  if (batch_key_.empty()) return {};
  return sha256_hex(fmt::format("{}/{}", batch_key_, entry.path)).substr(0, kUploadKeyLength);
}

bool BatchSender::pace(std::uint64_t bytes) {
  if (rate_ == 0) return true;
  auto now = EventLoop::Clock::now();
  next_send_ = std::max(next_send_, now);
  if (next_send_ - now > kRateSlack) {
    rate_paused_ = true;
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_send_ - now - kRateSlack / 2);
    loop_.add_timer(std::max(wait, std::chrono::milliseconds{1}), [this] {
      rate_paused_ = false;
      last_progress_ = EventLoop::Clock::now();  // the pause was ours, not the server's
      pump();
    });
    return false;
  }
  next_send_ += std::chrono::duration_cast<EventLoop::Clock::duration>(
      std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(rate_)));
  return true;
}

void BatchSender::pump() {
  if (failure_ || loop_.stopping() || !connection_ || !connection_->ready() || rate_paused_) return;
  while (!awaiting_offer_ && !failure_ && !rate_paused_) {
    if (connection_->queued() >= kSendWindow) {
      connection_->flush();
      if (connection_->queued() >= kSendWindow) return;  // on_writable() goes on
    }
    if (streaming_) {
      send_chunk();
      continue;
    }
    if (next_ == tree_.entries.size()) break;
    if (pending_.size() >= kMaxPending) return;  // a reply makes room
    const TreeEntry& entry = tree_.entries[next_];
    if (!entry.directory && ask_ && journal_.confirmed(entry)) {
      ++next_;
      continue;
    }
    if (!entry.directory && entry.size <= kCheckpointInterval && !pace(entry.size)) return;
    ++next_;
    send_entry(entry);
  }
  if (next_ == tree_.entries.size() && !streaming_ && !awaiting_offer_ && !output_done_ &&
      !failure_) {
    output_done_ = true;
    // The batch's end (the replies are still read); after this call, not inside it: pump() may
    // run inside the connection's on_writable(), whose caller shuts down at once when asked to
    // from there, even with what pump() just queued still unwritten. With a batch key the
    // half-close waits for the last reply: DONE may have to go before it (see end_batch).
    if (batch_key_.empty()) {
      loop_.defer([this] {
        if (connection_ && !failure_) connection_->shutdown_output();
      });
    }
    if (pending_.empty()) end_batch();
  }
}

// Every file confirmed. When the server logged them (an OK with confirm=1), DONE tells it the
// log may go; then the half-close, and the server's close is waited for (bounded by kDoneWait)
// so DONE is read before this process exits.
void BatchSender::end_batch() {
  if (batch_key_.empty()) return loop_.stop();
  loop_.defer([this] {
    if (!connection_ || failure_ || loop_.stopping()) return;
    if (server_confirms_) connection_->send(kDoneLine);
    connection_->shutdown_output();
    if (!server_confirms_) return loop_.stop();
    confirming_ = true;
    loop_.add_timer(kDoneWait, [this] { loop_.stop(); });
  });
}

void BatchSender::send_entry(const TreeEntry& entry) {
  std::size_t index = next_ - 1;
  last_progress_ = EventLoop::Clock::now();
  if (entry.directory) {
    connection_->send(format_batch_header(0, entry.path, token_, {}, false, false, true, {}));
    pending_.push_back(Pending{index, ContentHash().hex()});
    return;
  }
  Fd file(::open(entry.source.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!file) return fail(read_failure(entry));
  if (entry.size <= kCheckpointInterval) {
    // Header and data in one block: one segment for a small file, as the server reads it.
    std::string block =
        format_batch_header(entry.size, entry.path, token_, {}, false, false, false, batch_key_);
    std::size_t header = block.size();
    block.resize(header + static_cast<std::size_t>(entry.size));
    if (!read_exactly(file.get(), block.data() + header, static_cast<std::size_t>(entry.size), 0)) {
      return fail(read_failure(entry));
    }
    ContentHash hash;
    hash.update(block.data() + header, static_cast<std::size_t>(entry.size));
    connection_->send(make_block(std::move(block)));
    pending_.push_back(Pending{index, hash.hex()});
    result_.bytes += entry.size;
    return;
  }
  std::string key = file_key(entry);
  bool asking = !key.empty() && ask_ && journal_.started(entry);
  connection_->send(
      format_batch_header(entry.size, entry.path, token_, key, asking, true, false, batch_key_));
  pending_.push_back(Pending{index, {}});
  if (!key.empty() && !asking) journal_.mark_started(entry);
  stream_file_ = std::move(file);
  if (asking) {
    awaiting_offer_ = true;  // the RESUME line comes after the replies to everything before
    return;
  }
  start_streaming(entry, 0, ContentHash());
}

void BatchSender::start_streaming(const TreeEntry& entry, std::uint64_t from, ContentHash prefix) {
  streaming_ = static_cast<std::size_t>(&entry - tree_.entries.data());
  stream_at_ = from;
  stream_hash_ = std::move(prefix);
}

void BatchSender::send_chunk() {
  const TreeEntry& entry = tree_.entries[*streaming_];
  if (stream_at_ == entry.size) {
    pending_.back().hash = stream_hash_.hex();
    streaming_.reset();
    stream_file_.reset();
    return;
  }
  auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, entry.size - stream_at_));
  if (!pace(want)) return;
  std::string chunk(want, '\0');
  if (!read_exactly(stream_file_.get(), chunk.data(), want, stream_at_)) {
    return fail(read_failure(entry));
  }
  stream_hash_.update(chunk.data(), want);
  connection_->send(make_block(std::move(chunk)));
  stream_at_ += want;
  result_.bytes += want;
  last_progress_ = EventLoop::Clock::now();
}

void BatchSender::on_data(std::string_view bytes) {
  if (loop_.stopping() || !connection_ || confirming_) return;
  reply_text_.append(bytes);
  std::size_t start = 0;
  std::size_t newline = reply_text_.find('\n');
  while (newline != std::string::npos && !loop_.stopping()) {
    on_line(reply_text_.substr(start, newline - start));
    start = newline + 1;
    newline = reply_text_.find('\n', start);
  }
  reply_text_.erase(0, start);
  if (reply_text_.size() > kMaxReplyLine) {
    fail(fmt::format("{} sent something that is not a MUXUP/1 reply", server_));
  }
}

void BatchSender::on_line(const std::string& line) {
  last_progress_ = EventLoop::Clock::now();
  // RESUME and ACK lines are about the large file the server receives now: the last one sent
  // (with --sync full the OKs of the files before it may still wait for their sync).
  if (awaiting_offer_ && line.starts_with("RESUME ")) return on_offer(line);
  if (line.starts_with("ACK ")) {
    std::optional<std::uint64_t> offset = parse_ack(line);
    if (!offset || pending_.empty()) {
      return fail(fmt::format("{} sent something that is not a MUXUP/1 reply: \"{}\"", server_,
                              printable_reply(line)));
    }
    pending_.back().acked = std::max(pending_.back().acked, *offset);
    show_progress();
    return;
  }
  on_reply(line);
}

void BatchSender::on_offer(const std::string& line) {
  const TreeEntry& entry = tree_.entries[pending_.back().index];
  std::optional<ResumeOffer> offer = parse_resume_offer(line);
  if (!offer || offer->offset > entry.size) {
    return fail(fmt::format("{} sent something that is not a MUXUP/1 resume offer: \"{}\"", server_,
                            printable_reply(line)));
  }
  awaiting_offer_ = false;
  std::uint64_t from = 0;
  ContentHash prefix;
  if (offer->offset > 0) {
    ContentHash ours;
    std::string buffer(kChunk, '\0');
    bool read = true;
    for (std::uint64_t done = 0; read && done < offer->offset;) {
      auto want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, offer->offset - done));
      read = read_exactly(stream_file_.get(), buffer.data(), want, done);
      ours.update(buffer.data(), want);
      done += want;
    }
    if (read && ours.hex() == offer->prefix_hash) {
      from = offer->offset;
      prefix = std::move(ours);
      // All of it: saved by an earlier run whose OK was lost (the server's completion log).
      progress_.note(
          from == entry.size
              ? fmt::format("{} is on the server already ({}, verified): nothing to send",
                            entry.path, format_bytes(from))
              : fmt::format("Resumed {} at {} of {}", entry.path, format_bytes(from),
                            format_bytes(entry.size)));
    } else {
      progress_.note(fmt::format(
          "{} changed since the interrupted upload ({} of it were on the server): starting over",
          entry.source, format_bytes(offer->offset)));
    }
  }
  connection_->send(format_resume_from(from));
  start_streaming(entry, from, std::move(prefix));
  pending_.back().acked = from;
  last_progress_ = EventLoop::Clock::now();  // reading the prefix was ours, not the server's
  pump();
}

void BatchSender::on_reply(const std::string& line) {
  std::optional<UploadReply> reply = parse_reply_line(line);
  if (!reply || pending_.empty()) {
    return fail(fmt::format("{} sent something that is not a MUXUP/1 reply: \"{}\"", server_,
                            printable_reply(line)));
  }
  const Pending& front = pending_.front();
  const TreeEntry& entry = tree_.entries[front.index];
  if (!reply->ok) {
    busy_ = busy_refusal(reply->reason);
    return fail(
        fmt::format("{} refused {}: {}", server_, entry.path, printable_reply(reply->reason)),
        transient_refusal(reply->reason));
  }
  if (front.hash.empty()) {
    return fail(fmt::format("{} replied OK to {} before all of it was sent", server_, entry.path));
  }
  if (reply->bytes != entry.size || reply->hash != front.hash) {
    return fail(fmt::format(
        "verification failed for {}: {} received {} bytes with XXH3-128 {}, sent {} bytes with "
        "XXH3-128 {}",
        entry.path, server_, reply->bytes, reply->hash, entry.size, front.hash));
  }
  server_confirms_ = server_confirms_ || reply->confirm;
  if (!entry.directory) {
    journal_.mark_confirmed(entry);
    ++confirmed_files_;
    confirmed_bytes_ += entry.size;
    ++result_.files;
  }
  pending_.pop_front();
  show_progress();
  if (pending_.empty() && output_done_) return end_batch();  // every file confirmed
  pump();
}

void BatchSender::show_progress() {
  // The large file in flight, as far as the server acknowledged it.
  std::uint64_t acked = pending_.empty() ? 0 : pending_.back().acked;
  progress_.set_files(confirmed_files_, tree_.files);
  progress_.update(confirmed_bytes_ + acked, elapsed_seconds());
}

void BatchSender::on_end_of_input() {
  if (confirming_) return loop_.stop();  // the server read DONE
  if (loop_.stopping() || !connection_) return;
  std::string hint;
  // An older server takes one file per connection: it replied once and closed.
  if (result_.files == 1 && confirmed_files_ == 1) {
    hint = " (a server older than batch uploads takes one file per connection)";
  }
  // Transient: a server killed or restarted looks the same (an older server would take one more
  // file per try, within --retry's count).
  fail(fmt::format("{} closed the connection after confirming {} of {} files{}", server_,
                   confirmed_files_, tree_.files, hint),
       true);
}

void BatchSender::on_closed(std::string_view reason) {
  if (confirming_) return loop_.stop();
  if (loop_.stopping() || !connection_) return;
  const IoResult& failure = connection_->failure();
  fail(fmt::format(
           "connection to {}: {}", server_,
           failure.status == IoResult::Status::failed ? failure.describe() : std::string(reason)),
       true);
}

void BatchSender::check_progress() {
  if (confirming_) return;  // every file confirmed; kDoneWait bounds the rest
  if (rate_paused_) {
    last_progress_ = EventLoop::Clock::now();
    return;
  }
  if (EventLoop::Clock::now() - last_progress_ < stall_timeout_) return;
  double seconds = static_cast<double>(stall_timeout_.count()) / 1000;
  if (output_done_) {
    fail(fmt::format("no reply from {} within {:g} s", server_, seconds), true);
  } else {
    fail(fmt::format("{} took no data for {:g} s ({} of {} files confirmed){}", server_, seconds,
                     confirmed_files_, tree_.files, may_retry_ ? "" : "; giving up"),
         true);
  }
}

void BatchSender::interrupt(int signo) {
  if (loop_.stopping()) return;
  interrupted_by_ = signo;
  fail(fmt::format("interrupted by {} after {} of {} files ({} of {}) confirmed by {} in {}; {}",
                   signal_name(signo), confirmed_files_, tree_.files,
                   format_bytes(confirmed_bytes_), format_bytes(tree_.bytes), server_,
                   format_duration(elapsed_seconds()),
                   batch_key_.empty() ? "files not confirmed are sent again by the next run"
                                      : "run the same command again to resume"));
}

void BatchSender::fail(std::string message, bool transient) {
  if (loop_.stopping()) return;
  failure_ = std::move(message);
  transient_ = transient;
  // Data cut short must not pass for a whole file: a reset, not an orderly end.
  if (connection_) connection_->abort("cut short");
  loop_.stop();
}

double BatchSender::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
