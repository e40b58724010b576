#include "upload/upload_session.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "core/base/logger.hpp"
#include "core/base/units.hpp"

namespace mux {
namespace {

// Bounds the bytes one connection takes per wakeup (4 MiB), so a fast client cannot starve the
// others sharing the loop; epoll is level-triggered and calls it again while bytes remain.
constexpr int kMaxReadsPerWakeup = 4;
constexpr std::string_view kIncompletePrefix = "incomplete: ";

std::string seconds_text(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) return fmt::format("{} s", duration.count() / 1000);
  return fmt::format("{:.1f} s", static_cast<double>(duration.count()) / 1000);
}

}  // namespace

std::string header_timeout_reason(const UploadLimits& limits) {
  return fmt::format("timeout: no header within {}", seconds_text(limits.header_timeout));
}

void configure_for_uploads(ConnectionContext& connections) {
  connections.reads_per_wakeup = kMaxReadsPerWakeup;
  // A client still sending when it is told ERR gets this long to finish and read the reply.
  connections.linger_timeout = kLingerAfterReply;
}

UploadSession::UploadSession(UploadContext& context, Fd socket, std::uint64_t client_number,
                             std::string peer, FinishedHandler on_finished, AdmissionTicket ticket,
                             std::unique_ptr<ByteStream> stream)
    : context_(context),
      ticket_(std::move(ticket)),
      client_number_(client_number),
      peer_(std::move(peer)),
      on_finished_(std::move(on_finished)),
      started_(EventLoop::Clock::now()),
      parser_(context.limits.max_size) {
  if (context_.output_dir != nullptr) {
    disk_.emplace(context_.loop, context_.logger, *context_.output_dir, context_.reserved_ahead,
                  context_.limits.min_free, client_label());
  }
  connection_.emplace(context_.connections, std::move(socket), std::move(stream),
                      static_cast<Connection::Owner&>(*this));
  connection_->set_idle_timeout(context_.limits.idle_timeout);
  if (context_.limits.header_timeout.count() > 0) {
    header_timer_ = context_.loop.add_timer(context_.limits.header_timeout, [this] {
      header_timer_ = 0;
      on_header_timeout();
    });
  }
  if (context_.limits.min_rate != 0)
    rate_timer_ = context_.loop.add_periodic(kRateWindow, [this] { check_rate(); });
  ticket_.on_shed([this] { shed(); });
}

bool UploadSession::past_header() const {
  UploadParser::State state = parser_.state();
  // A complete upload (committing, or replied OK; in a batch, any file done) is past its header
  // whatever its size; one refused or failed never was.
  if (state == UploadParser::State::done || uploads_done_ != 0) return true;
  if (phase_ != Phase::receiving) return false;
  if (state == UploadParser::State::detecting || state == UploadParser::State::header) return false;
  return has_header_ || bytes_seen_ >= kRawHeaderBytes;
}

void UploadSession::note_header_progress() {
  if (header_complete_ || phase_ == Phase::finished || !past_header()) return;
  header_complete_ = true;
  ticket_.authenticated();
}

void UploadSession::screen(std::string_view bytes) {
  read_so_far_.append(bytes);
  if (refused_before_body(parser_.feed(bytes))) return;
  if (past_header()) hand_off(false);
}

bool UploadSession::refused_before_body(const UploadStep& step) {
  if (step.start) {
    if (std::optional<std::string> why = token_refusal(*step.start)) {
      refuse_unauthorized(std::move(*why));
      return true;
    }
    if (step.start->header) has_header_ = true;
  }
  if (step.failure == UploadFailure::http_request) {
    context_.logger.info("{} refused: its first line is an HTTP request line", client_label());
  }
  if (step.failure == UploadFailure::tls_hello) {
    refuse_tls_client();
    return true;
  }
  if (step.failure != UploadFailure::none) {
    fail(step.reason);
    return true;
  }
  return false;
}

// The child gets the connection and carries on; this process forgets its copy without writing a
// byte (a TLS session must see no record, not even close_notify, but the child's). Until a child
// exists, the session stays the connection's, so ERR server busy still goes inside TLS.
void UploadSession::hand_off(bool ended) {
  header_complete_ = true;
  ticket_.authenticated();
  ended_ = ended;
  if (!context_.hand_off(*this)) {
    fail("server busy: cannot start a process");
    return;
  }
  connection_->forget();
  finish();
}

UploadSession::HandedOver UploadSession::take_in_child() noexcept {
  Connection::Parts parts = connection_->take_in_child();
  return HandedOver{std::move(parts.socket), std::move(parts.stream), std::move(read_so_far_),
                    ended_};
}

void UploadSession::replay(std::string_view read, bool ended) {
  if (!read.empty()) on_data(read);
  if (ended) on_end_of_input();
}

void UploadSession::shed() {
  if (phase_ == Phase::finished) return;
  context_.logger.detail("{} shed for a newcomer: the server is full and it has no header yet",
                         client_label());
  // No reply: its header is not in, and a newcomer is waiting for the slot now.
  connection_->close_now("shed for a newcomer: no complete header yet");
}

void UploadSession::check_rate() {
  if (phase_ != Phase::receiving) return;
  std::uint64_t brought = bytes_seen_ - std::exchange(bytes_at_window_, bytes_seen_);
  if (brought >= context_.limits.min_rate * static_cast<std::uint64_t>(kRateWindow.count())) return;
  fail(fmt::format("timeout: {} bytes in {} s, below --min-rate {} bytes/s", brought,
                   kRateWindow.count(), context_.limits.min_rate));
}

UploadSession::~UploadSession() {
  *self_ = nullptr;
  context_.loop.cancel_timer(header_timer_);
  context_.loop.cancel_timer(rate_timer_);
  context_.loop.cancel_timer(refusal_timer_);
  context_.loop.cancel_timer(ack_timer_);
  release_reservation();
}

bool UploadSession::in_flight() const noexcept {
  // A connection that sent nothing is not an upload yet.
  return (phase_ == Phase::receiving && parser_.any_bytes()) || phase_ == Phase::committing ||
         (group_sync_ && group_sync_->holding());
}

void UploadSession::abort(std::string_view reason) {
  // Committing: every byte is in and the file is being saved; the reply will tell the truth
  // soon. Replied: its close is bounded anyway.
  if (phase_ == Phase::confirming) return end_confirming();
  if (phase_ != Phase::receiving) return;
  if (in_flight()) {
    aborting_ = true;
    fail(std::string(reason));
  } else {
    phase_ = Phase::closing;
    connection_->close_gracefully();
  }
}

void UploadSession::on_data(std::string_view bytes) {
  if (phase_ == Phase::confirming) return read_done_line(bytes);
  if (phase_ != Phase::receiving) return;
  if (disk_) disk_->data_arrived();
  bytes_seen_ += bytes.size();
  // A header still coming in, however slowly, is shed only after the idle ones (issue 21).
  if (!header_complete_ && !bytes.empty()) ticket_.progressed();
  if (context_.hand_off) return screen(bytes);
  // One upload, or in a batch as many as the bytes hold: each complete one leaves the rest of
  // the input to the next (pipelined headers, no round trip between files).
  while (phase_ == Phase::receiving && !bytes.empty()) {
    std::uint64_t done_before = uploads_done_;
    UploadStep step = parser_.feed(bytes);
    bytes.remove_prefix(std::min(step.consumed, bytes.size()));
    act_on(step);
    // This upload goes on: it took every byte.
    if (uploads_done_ == done_before && !step.confirmed) break;
  }
  UploadParser::State state = parser_.state();
  if (state != UploadParser::State::detecting && state != UploadParser::State::header) {
    context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  }
  note_header_progress();
}

void UploadSession::on_end_of_input() {
  if (phase_ == Phase::confirming) return end_confirming();  // no DONE: the record stays
  if (phase_ != Phase::receiving) return;
  if (!parser_.any_bytes() && uploads_done_ > 0) {
    // A batch's end: the client half-closed after its last upload.
    context_.logger.info("{} sent {} file(s) and directories, {} bytes, in one batch",
                         client_label(), uploads_done_, bytes_done_);
    if (group_sync_ && group_sync_->busy()) {
      phase_ = Phase::closing;  // the last OKs go out after their sync
      close_after_replies_ = true;
      connection_->pause_reading();
      return;
    }
    phase_ = Phase::closing;
    connection_->close_gracefully();
    return;
  }
  if (!parser_.any_bytes()) {
    context_.logger.detail("{} closed without sending anything", client_label());
    phase_ = Phase::closing;
    connection_->close_gracefully();
    return;
  }
  // An upload whose end is the connection's end (raw, or of unknown size) is whole only if the
  // end is the sender's: over TLS a FIN without close_notify may be anyone's cut (a truncation
  // attack, a dropped link), so nothing is saved.
  const ByteStream* stream = connection_->stream();
  if (parser_.state() == UploadParser::State::body && !parser_.expected_size() &&
      stream != nullptr && stream->end_was_unmarked()) {
    fail(
        "incomplete: the TLS connection ended without close_notify, so the end of the data "
        "is not known");
    return;
  }
  if (context_.hand_off) {
    // A raw upload shorter than its header is whole: the child saves it.
    if (!refused_before_body(parser_.end_of_input())) hand_off(true);
    return;
  }
  act_on(parser_.end_of_input());
  note_header_progress();
}

void UploadSession::on_closed(std::string_view reason) {
  if (phase_ == Phase::committing) {
    // The file is saved anyway; its outcome is logged when the commit ends.
    connection_lost_ = true;
    return;
  }
  if (phase_ == Phase::receiving) {
    if (in_flight()) {
      // The connection broke (a reset, an error) before the upload ended: nothing to reply to.
      release_reservation();
      if (resumable_ && resume_started_) checkpoint(true);
      file_.reset();
      resume_record_file_.reset();  // its lock with the data's (a job's copy keeps both)
      // While receiving, the server writes only RESUME and ACK lines: a write that failed met
      // the same broken connection a read would have, and is logged as one.
      std::string why(reason.empty() ? std::string_view("connection lost") : reason);
      if (why.starts_with("write failed: ")) why = "connection error: " + why.substr(14);
      context_.logger.info("Received {} bytes from {} in {:.3f} s: incomplete ({})",
                           parser_.received(), client_label(), elapsed_seconds(), why);
    } else if (reason.starts_with("handshake failed: ")) {
      // Bytes came, but not an upload: a plaintext client on a TLS port, a failed handshake.
      context_.logger.info("{} {}", client_label(), reason);
    } else if (reason.starts_with("handshake")) {  // a TLS handshake that timed out
      context_.logger.detail("{} closed before an upload began: {}", client_label(), reason);
    } else {  // ended before sending a byte: not an upload either
      context_.logger.detail("{} closed without sending anything", client_label());
    }
  }
  finish();
}

void UploadSession::on_idle() {
  if (phase_ == Phase::confirming) return end_confirming();
  if (phase_ != Phase::receiving) return;
  fail(fmt::format("timeout: no data for {}", seconds_text(context_.limits.idle_timeout)));
}

void UploadSession::on_header_timeout() {
  if (phase_ != Phase::receiving) return;
  UploadParser::State state = parser_.state();
  if (state != UploadParser::State::detecting && state != UploadParser::State::header) return;
  fail(header_timeout_reason(context_.limits));
}

void UploadSession::act_on(const UploadStep& step) {
  if (step.start) start(*step.start);
  if (step.failure == UploadFailure::http_request) {
    context_.logger.info("{} refused: its first line is an HTTP request line", client_label());
  }
  if (step.failure == UploadFailure::tls_hello) return refuse_tls_client();
  if (step.failure != UploadFailure::none) {
    fail(step.reason);
    return;
  }
  if (step.confirmed) batch_confirmed();
  if (phase_ == Phase::receiving && step.resume_from) continue_resume(*step.resume_from);
  if (phase_ == Phase::receiving && !step.held.empty()) store(step.held);
  if (phase_ == Phase::receiving && !step.body.empty()) store(step.body);
  if (phase_ == Phase::receiving && step.complete) complete();
}

std::optional<std::string> UploadSession::token_refusal(const UploadStart& start) const {
  const AccessTokens* tokens = context_.limits.tokens;
  if (tokens == nullptr || !tokens->required()) return std::nullopt;
  const std::string* token = start.header ? start.header->field("token") : nullptr;
  if (!start.header) return "a raw upload, but a token is required";
  if (token == nullptr) return "no token= in the header";
  if (!tokens->accepts(*token)) return "wrong token";
  return std::nullopt;
}

void UploadSession::start(const UploadStart& start) {
  if (std::optional<std::string> why = token_refusal(start)) return refuse_unauthorized(*why);
  if (start.header) {
    has_header_ = true;
    const UploadHeader& header = *start.header;
    const std::string* batch = header.field(kBatchField);
    batch_ = batch != nullptr && *batch == "1";
    if (batch_) {
      // A relative path: refused, not repaired, so a tree arrives as it was or not at all.
      if (std::string why = check_relative_path(header.name); !why.empty()) {
        context_.logger.info("{} refused a batch member: bad path ({})", client_label(), why);
        return fail(fmt::format("bad path: {}", why));
      }
      const std::string* dir = header.field(kDirField);
      dir_entry_ = dir != nullptr && *dir == "1";
      if (dir_entry_ && header.size != std::uint64_t{0}) {
        return fail("bad header: dir=1 with a size other than 0");
      }
      name_ = header.name;
    } else {
      name_ = sanitize_file_name(header.name, raw_upload_name(client_number_));
    }
    const std::string* reply_name = header.field(kReplyNameField);
    reply_with_name_ = reply_name != nullptr && *reply_name == "1";
    const std::string* ack = header.field(kAckField);
    acks_ = ack != nullptr && *ack == "1";
    const std::string* confirm = header.field(kConfirmField);
    confirm_ = confirm != nullptr && *confirm == "1";
    if (batch_ && confirm_ && !open_completion_log(header)) return;
    asked_ = asks_resume_offer(header);
    if (!prepare_resume(header)) return;
    context_.logger.detail("{} header: {} bytes, name \"{}\"", client_label(),
                           header.size ? fmt::to_string(*header.size) : "unknown number of", name_);
  } else {
    name_ = raw_upload_name(client_number_);
    context_.logger.detail("{} raw upload (no MUXUP/1 header)", client_label());
  }
  // A header the parser refused (too large) still starts nothing on disk.
  if (parser_.state() == UploadParser::State::failed || phase_ != Phase::receiving) return;
  if (dir_entry_) return;  // nothing to store: made when it completes
  if (!open_storage()) return;
  if (!resumable_) {
    acknowledge(0);  // the data may flow: ACK lines will follow
    return;
  }
  if (asked_) {
    offer_resume();
  } else {
    continue_resume(0);  // a first attempt: the data follows at once, from its start
  }
}

// A batch with batch-key= (and confirm=1): its saved files are logged until the client's DONE.
// Every header of the batch names the same key: the log is opened (and an earlier connection's
// read) once per connection. False (answered ERR busy) while another connection holds it.
bool UploadSession::open_completion_log(const UploadHeader& header) {
  const std::string* key = header.field(kBatchKeyField);
  if (context_.output_dir == nullptr || key == nullptr || !valid_upload_key(*key)) return true;
  if (completion_log_ && *key == completion_log_key_) return true;
  const std::string* token = header.field("token");
  const AccessTokens* tokens = context_.limits.tokens;
  std::string token_hash =
      tokens != nullptr && tokens->required() && token != nullptr ? sha256_hex(*token) : "";
  completion_log_.reset();  // another key's lock first
  completion_log_.emplace(context_.output_dir->fd(), sha256_hex(*key), std::move(token_hash));
  completion_log_key_ = *key;
  if (!completion_log_->held_elsewhere()) return true;
  // An earlier connection of the batch (the command killed and run again at once) may still be
  // saving what it had buffered: reading the log now would miss those files and save them twice.
  completion_log_.reset();
  context_.logger.info("{} refused: an earlier connection of this batch is still being saved",
                       client_label());
  fail(std::string(kBatchBusyReason));
  return false;
}

bool UploadSession::prepare_resume(const UploadHeader& header) {
  const std::string* key = header.field(kResumeField);
  if (key == nullptr || !header.size) return true;
  if (!valid_upload_key(*key)) {
    fail("bad header: resume= is not an upload key (32 hex digits)");
    return false;
  }
  resumable_ = true;
  resume_record_.size = *header.size;
  resume_record_.name = name_;
  resume_record_.key_hash = sha256_hex(*key);
  const std::string* token = header.field("token");
  const AccessTokens* tokens = context_.limits.tokens;
  if (tokens != nullptr && tokens->required() && token != nullptr) {
    resume_record_.token_hash = sha256_hex(*token);
  }
  return true;
}

// Answers a resumable header at once: how much of it this server already holds (0 when
// discarding, or when there is nothing to continue), and the hash of that prefix.
void UploadSession::offer_resume() {
  connection_->send(format_resume_offer(
      resume_offer_, already_saved_hash_.empty() ? hash_.hex() : already_saved_hash_));
}

void UploadSession::continue_resume(std::uint64_t from) {
  resume_started_ = true;
  if (from != 0 && from != resume_offer_) {
    fail(fmt::format("bad header: FROM {}, but the offer was {}", from, resume_offer_));
    return;
  }
  if (!already_saved_as_.empty()) {
    if (from != 0) return;  // all of it: nothing follows, complete() replies
    // The client's file changed since: a new upload after all, into a partial of its own.
    context_.logger.info("{} starts over: the client did not take the saved upload {}",
                         client_label(), context_.output_dir->path_of(already_saved_as_));
    already_saved_as_.clear();
    already_saved_hash_.clear();
    resume_offer_ = 0;
    stored_ = 0;
    hash_ = ContentHash();
    if (disk_) disk_->start_at(0);
    if (!claim_partial()) return;
  }
  if (from == 0 && resume_offer_ != 0) {
    // The client's file changed (or --no-resume): what was kept is of no use.
    context_.logger.info("{} starts over: the client did not take the offer of {} bytes",
                         client_label(), resume_offer_);
    hash_ = ContentHash();
    stored_ = 0;
    if (disk_) disk_->start_at(0);
    if (file_) {
      // The record must never describe the new data: emptied before any of it is written.
      int error = ::ftruncate(resume_record_file_.get(), 0) == 0 ? file_->restart() : errno;
      if (error != 0) {
        fail(fmt::format("disk error: {}", std::generic_category().message(error)));
        return;
      }
    }
  } else if (from != 0) {
    context_.logger.info("{} resumed at {} of {} bytes", client_label(), from, resume_record_.size);
  }
  next_checkpoint_ = next_checkpoint(stored_);
  acknowledge(stored_);  // where the data continues: what is held from an earlier connection
}

// Records how far the data goes and the hash state there. --sync none: one small write now (the
// data is in the kernel already). --sync full: the data is flushed before the record is written,
// on the Committer's thread; a checkpoint due while the last one still runs is skipped.
// The last one (`last`: the connection is gone or the upload was interrupted) is never skipped:
// queued behind a running one (the Committer keeps the order), it records every byte received,
// so a client killed mid-upload sends nothing twice. It also cuts the data to that length,
// giving back the disk reserved past it, so the next try's claim has nothing to cut: the resume
// question is answered without waiting on the filesystem.
void UploadSession::checkpoint(bool last) {
  if (!file_ || !resume_record_file_) return;
  next_checkpoint_ = next_checkpoint(stored_);
  SyncMode sync = context_.output_dir->sync_mode();
  if (sync != SyncMode::none) {
    if (!checkpoint_pending_) checkpoint_pending_ = std::make_shared<std::atomic<bool>>(false);
    // One flush at a time; a skipped checkpoint must not move resume_record_.offset, which is
    // where a full disk cuts the partial back to (the record on disk stays at the older one).
    if (checkpoint_pending_->exchange(true) && !last) return;
  }
  ResumeRecord before = resume_record_;
  resume_record_.offset = stored_;
  resume_record_.hash_state = hash_.save();
  std::string encoded = encode_resume_record(resume_record_);
  std::uint64_t offset = stored_;
  std::optional<std::uint64_t> cut_at = last ? std::optional(offset) : std::nullopt;
  if (sync == SyncMode::none) {
    if (int error =
            write_resume_checkpoint(file_->fd(), resume_record_file_.get(), encoded, sync, cut_at);
        error != 0) {
      // The record on disk is still the older one (a full disk refuses a first record's
      // block): a disk-full failure must cut the data back to that, not to this offset.
      resume_record_ = std::move(before);
      context_.logger.info("{} checkpoint failed: {}", client_label(),
                           std::generic_category().message(error));
    } else {
      acknowledge(offset);
    }
    return;
  }
  // Its own descriptors: the job may outlive this session (they also keep the upload's lock).
  Fd data(::fcntl(file_->fd(), F_DUPFD_CLOEXEC, 0));
  Fd record(::fcntl(resume_record_file_.get(), F_DUPFD_CLOEXEC, 0));
  if (!data || !record) {
    checkpoint_pending_->store(false);
    return;
  }
  context_.committer->run([data = std::make_shared<Fd>(std::move(data)),
                           record = std::make_shared<Fd>(std::move(record)),
                           encoded = std::move(encoded), pending = checkpoint_pending_,
                           &loop = context_.loop, self = self_, offset, cut_at] {
    int error =
        write_resume_checkpoint(data->get(), record->get(), encoded, SyncMode::full, cut_at);
    pending->store(false);
    // Only a flushed checkpoint is acknowledged: the client's progress is what a crash keeps.
    if (error == 0) {
      loop.post([self, offset] {
        if (UploadSession* session = *self) session->acknowledge(offset);
      });
    }
  });
}

// At most one ACK line per kAckInterval (a progress bar redraws ten times a second; a line per
// MiB cost a send and a client wakeup each): a later one waits on a timer and goes out with the
// newest offset. The first is sent at once.
void UploadSession::acknowledge(std::uint64_t offset) {
  if (!acks_ || phase_ != Phase::receiving) return;  // after the reply, nothing more is said
  next_ack_ = next_checkpoint(offset);
  ack_pending_ = std::max(ack_pending_, offset);
  if (ack_timer_ != 0) return;  // the timer sends the newest
  auto now = EventLoop::Clock::now();
  if (ack_sent_ && now - last_ack_ < kAckInterval) {
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(kAckInterval - (now - last_ack_));
    ack_timer_ = context_.loop.add_timer(wait, [this] {
      ack_timer_ = 0;
      send_ack();
    });
    return;
  }
  send_ack();
}

void UploadSession::send_ack() {
  if (phase_ != Phase::receiving) return;
  connection_->send(format_ack(ack_pending_));
  ack_sent_ = true;
  last_ack_ = EventLoop::Clock::now();
}

bool UploadSession::open_storage() {
  if (context_.output_dir == nullptr) return true;
  try {
    if (context_.limits.min_free != 0) {
      std::uint64_t free = context_.output_dir->free_bytes();
      if (free < context_.limits.min_free) {
        context_.logger.info("{} refused: {} free in {}, --min-free is {}", client_label(),
                             format_bytes(free), context_.output_dir->path(),
                             format_bytes(context_.limits.min_free));
        fail(fmt::format("disk full: less than {} free", format_bytes(context_.limits.min_free)));
        return false;
      }
    }
    if (!resumable_) {
      file_.emplace(context_.output_dir->create_partial(client_number_));
      return true;
    }
    // Asked about an upload already saved (its OK lost with the connection): offered whole.
    if (const CompletionLog::Entry* entry = asked_ ? logged_member() : nullptr;
        entry != nullptr && entry->size == resume_record_.size) {
      already_saved_as_ = entry->saved_as;
      already_saved_hash_ = entry->hash;
      resume_offer_ = entry->size;
      stored_ = entry->size;
      return true;
    }
    if (std::optional<ResumeRecord> done =
            asked_ && !batch_ ? context_.output_dir->find_completed(resume_record_) : std::nullopt;
        done) {
      if (std::optional<ContentHash> hash = ContentHash::restore(done->hash_state); hash) {
        already_saved_as_ = done->saved_as;
        already_saved_hash_ = hash->hex();
        resume_offer_ = done->size;
        stored_ = done->size;
        return true;
      }
    }
  } catch (const std::system_error& error) {
    fail(fmt::format("disk error: {}", error.code().message()));
    return false;
  }
  if (!claim_partial()) return false;
  // A commit of this upload that ended between the look above and the claim (the claim found
  // its record gone and started afresh): offered whole after all, the empty claim let go.
  if (asked_ && !batch_ && stored_ == 0) {
    if (std::optional<ResumeRecord> done = context_.output_dir->find_completed(resume_record_)) {
      if (std::optional<ContentHash> hash = ContentHash::restore(done->hash_state); hash) {
        file_->discard_on_close();
        file_.reset();
        resume_record_file_.reset();
        already_saved_as_ = done->saved_as;
        already_saved_hash_ = hash->hex();
        resume_offer_ = done->size;
        stored_ = done->size;
      }
    }
  }
  return true;
}

bool UploadSession::claim_partial() {
  try {
    std::optional<ResumeClaim> claim = context_.output_dir->claim_resumable(resume_record_);
    if (!claim) {
      fail(std::string(kUploadBusyReason));
      return false;
    }
    file_.emplace(std::move(claim->file));
    resume_record_file_ = std::move(claim->record);
    resume_offer_ = claim->offset;
    stored_ = claim->offset;
    if (disk_) disk_->start_at(stored_);
    hash_ = std::move(claim->hash);
    return true;
  } catch (const std::system_error& error) {
    fail(fmt::format("disk error: {}", error.code().message()));
    return false;
  }
}

void UploadSession::store(std::string_view bytes) {
  std::uint64_t end = stored_ + bytes.size();
  hash_.update(bytes.data(), bytes.size());
  if (!file_) {
    stored_ = end;
    if (acks_ && stored_ >= next_ack_) acknowledge(stored_);  // discarding: hashed is all there is
    return;
  }
  int error = disk_->before_write(*file_, end, parser_.expected_size());
  if (error == 0) error = file_->append(bytes.data(), bytes.size());
  stored_ = end;
  disk_->written(end);
  if (error == 0 && resumable_ && resume_started_ && stored_ >= next_checkpoint_) checkpoint();
  if (error == 0 && acks_ && !(resumable_ && file_) && stored_ >= next_ack_) acknowledge(stored_);
  // A full disk is not the uploader's fault: a resumable upload keeps what its last checkpoint
  // covers, to continue once there is room (the data past it is cut off then).
  disk_full_ = error == ENOSPC;
  if (error == ENOSPC && context_.limits.min_free != 0) {
    fail(fmt::format("disk full: less than {} free", format_bytes(context_.limits.min_free)));
  } else if (error != 0) {
    fail(fmt::format("disk error: {}", std::generic_category().message(error)));
  }
}

void UploadSession::complete() {
  if (!already_saved_as_.empty()) return complete_already_saved();
  if (resumable_ && file_ && confirm_ && !batch_) {
    // What the commit leaves for a client that never reads the OK (see complete_already_saved).
    ResumeRecord done = resume_record_;
    done.offset = stored_;
    done.hash_state = hash_.save();
    file_->set_completion(std::move(done));
  }
  if (batch_) return complete_batch_member();
  if (!file_) {
    log_received();
    reply_and_close(format_ok_reply(parser_.received(), hash_.hex()));
    return;
  }
  release_reservation();
  phase_ = Phase::committing;
  context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  // Nothing more belongs to the upload, and a slow flush is not the client being idle.
  connection_->pause_reading();
  connection_->set_idle_timeout(std::chrono::milliseconds{0});
  commit_ticket_ = context_.committer->commit(
      std::move(*file_), name_, [this](CommitResult result) { on_committed(std::move(result)); });
  file_.reset();
}

void UploadSession::complete_already_saved() {
  context_.logger.info("{} {} was saved already ({} bytes): nothing sent again", client_label(),
                       context_.output_dir->path_of(already_saved_as_),
                       parser_.expected_size().value_or(0));
  std::string reply =
      format_ok_reply(parser_.received(), already_saved_hash_,
                      reply_with_name_ ? already_saved_as_ : std::string(), confirm_);
  if (!batch_) return reply_and_await_done(reply);
  ++uploads_done_;
  if (context_.output_dir->sync_mode() == SyncMode::full) {
    hold_until_synced(std::move(reply));  // after the OKs of the files before it, in order
  } else {
    connection_->send(reply);
  }
  start_next_upload();
}

int UploadSession::batch_directory(const std::string& relative) {
  if (relative.empty()) return context_.output_dir->fd();
  if (!subdir_ || relative != subdir_path_) {
    subdir_ = context_.output_dir->open_subdir(relative, true);
    subdir_path_ = relative;
  }
  return subdir_.get();
}

// Saved on the loop's thread: a rename (without --sync full's flush, which the group sync does
// for many files at once) costs microseconds, and the next file's header is already here.
void UploadSession::complete_batch_member() {
  std::string saved = name_;
  // Sent again by a client that never read this file's OK: the same bytes are not saved twice.
  if (const CompletionLog::Entry* entry = logged_member(); entry != nullptr && !dir_entry_ &&
                                                           entry->size == parser_.received() &&
                                                           entry->hash == hash_.hex()) {
    release_reservation();
    already_saved_as_ = entry->saved_as;
    already_saved_hash_ = entry->hash;
    if (file_) file_->discard_on_close();  // a large member's partial, too
    file_.reset();
    return complete_already_saved();
  }
  if (context_.output_dir != nullptr) {
    try {
      if (dir_entry_) {
        (void)batch_directory(name_);
      } else {
        std::size_t slash = name_.rfind('/');
        std::string parent = slash == std::string::npos ? std::string() : name_.substr(0, slash);
        int directory = batch_directory(parent);
        release_reservation();
        std::string leaf = file_->commit_in(
            directory, slash == std::string::npos ? name_ : name_.substr(slash + 1), name_,
            context_.output_dir->hints(), false);
        saved = parent.empty() ? leaf : fmt::format("{}/{}", parent, leaf);
        file_.reset();
      }
    } catch (const std::system_error& error) {
      fail(fmt::format("disk error: {}", error.code().message()));
      return;
    }
    context_.logger.detail("{} saved {} ({} bytes) as {}", client_label(),
                           dir_entry_ ? "a directory" : "a file", parser_.received(),
                           context_.output_dir->path_of(saved));
  } else {
    context_.logger.detail("{} received {} bytes for {}", client_label(), parser_.received(),
                           name_);
  }
  bool logged = completion_log_ && !dir_entry_;
  if (logged) completion_log_->add(name_, {parser_.received(), hash_.hex(), saved});
  std::string reply = format_ok_reply(parser_.received(), hash_.hex(),
                                      reply_with_name_ ? saved : std::string(), logged);
  ++uploads_done_;
  bytes_done_ += parser_.received();
  if (context_.output_dir != nullptr && context_.output_dir->sync_mode() == SyncMode::full) {
    hold_until_synced(std::move(reply));
  } else {
    connection_->send(reply);
  }
  start_next_upload();
}

void UploadSession::start_next_upload() {
  release_reservation();
  context_.loop.cancel_timer(std::exchange(ack_timer_, 0));
  *self_ = nullptr;
  self_ = std::make_shared<UploadSession*>(this);
  parser_.next_upload();
  name_.clear();
  batch_ = false;
  dir_entry_ = false;
  reply_with_name_ = false;
  stored_ = 0;
  if (disk_) disk_->start_at(0);
  hash_ = ContentHash();
  file_.reset();
  resumable_ = false;
  resume_started_ = false;
  resume_record_ = ResumeRecord();
  resume_record_file_.reset();
  resume_offer_ = 0;
  asked_ = false;
  confirm_ = false;
  already_saved_as_.clear();
  already_saved_hash_.clear();
  next_checkpoint_ = 0;
  checkpoint_pending_.reset();
  acks_ = false;
  ack_sent_ = false;
  ack_pending_ = 0;
  next_ack_ = 0;
  disk_full_ = false;
  started_ = EventLoop::Clock::now();
}

void UploadSession::hold_until_synced(std::string line) {
  if (!group_sync_)
    group_sync_.emplace(context_.loop, *context_.committer, context_.output_dir->fd(),
                        static_cast<GroupSync::Hooks&>(*this));
  group_sync_->hold(std::move(line));
}

void UploadSession::synced_reply(const std::string& reply) {
  connection_->send(reply);
}

void UploadSession::all_synced() {
  if (close_after_replies_) connection_->close_gracefully();
}

void UploadSession::sync_failed(int error) {
  context_.logger.info("{} batch: syncfs failed: {}", client_label(),
                       std::generic_category().message(error));
  phase_ = Phase::closing;
  connection_->send(
      format_err_reply(fmt::format("disk error: {}", std::generic_category().message(error))));
  connection_->close_gracefully();
}

void UploadSession::on_committed(CommitResult result) {
  // Locked until the commit wrote the completion record (see OutputDirectory::claim_resumable).
  resume_record_file_.reset();
  if (!result.error.empty() && connection_lost_) {
    context_.logger.info("Received {} bytes from {} in {:.3f} s: incomplete (disk error: {})",
                         parser_.received(), client_label(), elapsed_seconds(), result.error);
    finish();
    return;
  }
  if (!result.error.empty()) {
    fail(fmt::format("disk error: {}", result.error));
    return;
  }
  log_received();
  context_.logger.info("Saved [Client {}] upload as {}", client_number_,
                       context_.output_dir->path_of(result.saved_as));
  context_.logger.detail("[Client {}] saved (--sync {}) in {:.3f} s", client_number_,
                         to_string(context_.output_dir->sync_mode()), result.sync_seconds);
  if (connection_lost_) {
    finish();
    return;
  }
  std::string reply =
      format_ok_reply(parser_.received(), hash_.hex(),
                      reply_with_name_ ? result.saved_as : std::string(), resumable_ && confirm_);
  if (resumable_ && confirm_) return reply_and_await_done(reply);
  reply_and_close(reply);
}

const CompletionLog::Entry* UploadSession::logged_member() const {
  return batch_ && completion_log_ ? completion_log_->find(name_) : nullptr;
}

// The OK of an upload the server keeps a completion record of (confirm=1): the connection stays
// open for the client's DONE (bounded by kLingerAfterReply), which removes the record.
void UploadSession::reply_and_await_done(const std::string& line) {
  phase_ = Phase::confirming;
  context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  connection_->send(line);
  connection_->resume_reading();
  connection_->set_idle_timeout(kLingerAfterReply);
}

void UploadSession::read_done_line(std::string_view bytes) {
  done_line_.append(bytes.substr(0, kDoneLine.size() - done_line_.size()));
  if (kDoneLine.starts_with(done_line_) && done_line_.size() < kDoneLine.size()) return;
  end_confirming();
}

void UploadSession::end_confirming() {
  if (done_line_ == kDoneLine) {
    context_.output_dir->forget_completed(resume_record_.key_hash);
    context_.logger.detail("{} confirmed the reply: its completion record is removed",
                           client_label());
  }
  phase_ = Phase::closing;
  connection_->close_gracefully();
}

// The client's DONE after the last reply of a batch: what the batch saved is confirmed.
void UploadSession::batch_confirmed() {
  if (!completion_log_) return;
  completion_log_->remove();
  context_.logger.detail("{} confirmed the batch's replies: its completion log is removed",
                         client_label());
}

void UploadSession::log_received() {
  std::uint64_t received = parser_.received();
  double seconds = elapsed_seconds();
  context_.logger.info("Received {} bytes from {} in {:.3f} s ({})", received, client_label(),
                       seconds,
                       format_rate(seconds > 0 ? static_cast<double>(received) / seconds : 0));
}

void UploadSession::fail(const std::string& reason) {
  if (phase_ != Phase::receiving && phase_ != Phase::committing) return;
  // The log says "incomplete" for every failure; a reason that starts with it need not repeat it.
  std::string_view why = reason;
  if (why.starts_with(kIncompletePrefix)) why.remove_prefix(kIncompletePrefix.size());
  release_reservation();
  // A resumable upload that was interrupted (the client stopped sending, went silent, or the
  // server is stopping) keeps what arrived, up to a checkpoint taken now; one the server refused
  // (too large, a bad header) leaves nothing, like any failed upload. A full disk mid-upload
  // keeps the partial only as far as an earlier checkpoint (no new one: the failed write's
  // bytes are not all there), and only when there is one: an empty partial would hold disk.
  bool interrupted =
      aborting_ || why.size() != reason.size() || std::string_view(reason).starts_with("timeout:");
  bool keep_checkpoint = disk_full_ && (resume_offer_ > 0 || resume_record_.offset > 0);
  if (file_ && resumable_ && !interrupted && !keep_checkpoint) file_->discard_on_close();
  // What lies past the checkpoint (and any reservation) is given back to the full disk now.
  if (file_ && keep_checkpoint)
    (void)file_->truncate(std::max(resume_record_.offset, resume_offer_));
  if (resumable_ && resume_started_ && interrupted && phase_ == Phase::receiving) {
    checkpoint(true);
  }
  file_.reset();  // removes the temporary file, before the log says the upload is over
  resume_record_file_.reset();
  if (parser_.any_bytes()) {
    context_.logger.info("Received {} bytes from {} in {:.3f} s: incomplete ({})",
                         parser_.received(), client_label(), elapsed_seconds(), why);
  } else {
    context_.logger.detail("{} sent nothing: {}", client_label(), why);
  }
  reply_and_close(format_err_reply(reason));
}

// Nothing of the upload is read or stored; after the address's delay (longer with each failure,
// see FailureThrottle) the client reads `ERR unauthorized` and the connection closes.
void UploadSession::refuse_unauthorized(std::string why) {
  phase_ = Phase::closing;
  context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  connection_->set_idle_timeout(std::chrono::milliseconds{0});
  connection_->pause_reading();
  auto delay = context_.limits.throttle->record_failure(throttle_address(peer_),
                                                        FailureThrottle::Clock::now());
  context_.logger.info("{} unauthorized: {}; answering in {} ms", client_label(), why,
                       delay.count());
  refusal_timer_ = context_.loop.add_timer(delay, [this] {
    refusal_timer_ = 0;
    connection_->send(format_err_reply("unauthorized"));
    connection_->resume_reading();  // what the client still sends is read and discarded
    connection_->close_gracefully();
  });
}

// A TLS client on this plaintext port: an ERR line would only be a garbled record to it, so it
// is answered in its own language, a fatal TLS alert, which its TLS stack reports at once
// (instead of waiting for --header-timeout). Nothing is saved.
void UploadSession::refuse_tls_client() {
  context_.logger.info(
      "{} refused: it speaks TLS and this port does not (start the server with "
      "--tls, or connect without it)",
      client_label());
  // A TLS record (version 3.1, which every TLS version accepts in an alert before the hello is
  // answered): alert level 2 (fatal), description 10 (unexpected_message).
  static constexpr char kUnexpectedMessageAlert[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x0a};
  reply_and_close(std::string(kUnexpectedMessageAlert, sizeof kUnexpectedMessageAlert));
}

void UploadSession::reply_and_close(const std::string& line) {
  phase_ = Phase::closing;
  context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  connection_->set_idle_timeout(std::chrono::milliseconds{0});
  if (group_sync_ && group_sync_->busy()) {
    // Earlier files of the batch wait for their sync: this reply follows their OKs, in order.
    connection_->pause_reading();
    close_after_replies_ = true;
    group_sync_->hold(line);
    return;
  }
  connection_->send(line);
  // Stops reading into the upload; keeps draining the client's input until its EOF (bounded),
  // so closing never turns into a reset that destroys the reply.
  connection_->close_gracefully();
}

void UploadSession::finish() {
  if (phase_ == Phase::finished) return;
  phase_ = Phase::finished;
  context_.loop.cancel_timer(std::exchange(header_timer_, 0));
  context_.loop.cancel_timer(std::exchange(refusal_timer_, 0));
  release_reservation();
  file_.reset();
  on_finished_(*this);  // may hand this session to loop.retire(): nothing may follow
}

std::string UploadSession::client_label() const {
  return fmt::format("[Client {}] {}", client_number_, peer_);
}

double UploadSession::elapsed_seconds() const {
  return std::chrono::duration<double>(EventLoop::Clock::now() - started_).count();
}

}  // namespace mux
