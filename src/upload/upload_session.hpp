// UploadSession: one client connection of the upload server, from the first byte to the reply.
// Owns the Connection (socket, stream, lingering close), the UploadParser that reads the
// protocol, the running hash, the header and no-progress deadlines and (with --output-dir) the
// PartialFile with its disk reservation. It does the I/O the parser asks for, replies OK or ERR
// and logs the outcome; every reply is followed by a graceful close (stop reading into the file,
// drain, half-close, read and discard until the client's EOF, bounded) so a client still sending
// reads the reply instead of a reset.
// Created by the single-loop server for each accepted connection, and by a fork-mode child for
// its one connection; both then only wait for on_finished.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/access/access_tokens.hpp"
#include "core/loop/admission.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "upload/completion_log.hpp"
#include "upload/content_hash.hpp"
#include "upload/disk_claim.hpp"
#include "upload/group_sync.hpp"
#include "upload/resume_record.hpp"
#include "upload/upload_parser.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_store.hpp"

namespace mux {

class Logger;
class UploadSession;

// Large reads amortize the syscall and the hash call, and with --output-dir make large writes.
inline constexpr std::size_t kUploadReadBufferSize = 1 << 20;
// On SIGINT/SIGTERM, how long uploads in flight get to finish before they end as incomplete.
inline constexpr std::chrono::seconds kShutdownGrace{5};

// After a reply, how long the client has to close its side (reading and discarding what it still
// sends) before the server closes anyway.
inline constexpr std::chrono::seconds kLingerAfterReply{10};

// What a client may make one upload cost, from the flags.
struct UploadLimits {
  std::uint64_t max_size = 0;  // --max-size; 0: unlimited
  std::uint64_t min_free = 0;  // --min-free: refuse uploads below this much free space; 0: off
  // --header-timeout: the header (or the first bytes of a raw upload) must have arrived this
  // long after connecting; 0: never.
  std::chrono::milliseconds header_timeout{10'000};
  // --idle-timeout: an upload that brings no byte for this long ends with ERR timeout; 0: never.
  std::chrono::milliseconds idle_timeout{60'000};
  // How each connection's bytes move: null is plain TCP, --tls-cert makes it TLS (the handshake
  // runs inside the session's Connection, so in fork mode inside the child).
  StreamFactory stream_factory{};
  // --token-file: every upload's header must carry `token=` with one of these (raw uploads are
  // refused); a failure is answered `ERR unauthorized` after the throttle's delay for its
  // address. Null (or empty) when no token is required. Owned by run_upload_server.
  const AccessTokens* tokens = nullptr;
  FailureThrottle* throttle = nullptr;
  // --min-rate: an upload that brings fewer bytes than this per second over a kRateWindow
  // (header and body alike) ends with ERR timeout, so a drip below --idle-timeout cannot hold
  // a slot for ever; 0: off.
  std::uint64_t min_rate = 0;
};

// ACK lines (ack=1) go out at most this often; the newest offset when one is due.
inline constexpr std::chrono::milliseconds kAckInterval{100};

// The window --min-rate is measured over.
inline constexpr std::chrono::seconds kRateWindow{30};

// What every session of one server (or of one fork-mode child) shares.
struct UploadContext {
  EventLoop& loop;
  Logger& logger;
  const OutputDirectory* output_dir = nullptr;  // null: count, hash and discard
  Committer* committer = nullptr;               // set whenever output_dir is
  UploadLimits limits;
  // One read buffer per loop, not per connection (a session never keeps bytes between two
  // reads, so ten thousand idle uploads cost no buffer memory), and the close timeouts.
  ConnectionContext& connections;
  std::uint64_t reserved_ahead = 0;  // disk reserved past the data, all sessions together
  // Fork-mode parent only: its sessions end at the header. Until then a session does what single
  // mode does (the TLS handshake, the header's deadlines and --min-rate, shedding, the token check,
  // every ERR for a refused or failed header); once the header is complete (see kRawHeaderBytes)
  // it calls this instead of going on. True: a child process took the connection over (the session
  // forgets it without a word and finishes); false: none could be started (the session answers
  // ERR server busy). Null: the whole upload is served here.
  std::function<bool(UploadSession&)> hand_off{};
};

// A raw upload has no header line: its header is its first this many bytes (or its end). Until
// a connection is past its header it may be shed for a newcomer while the server is full.
inline constexpr std::uint64_t kRawHeaderBytes = 1024;
// The ConnectionContext upload sessions expect: 1 MiB reads, 4 per wakeup, a 10 s linger.
void configure_for_uploads(ConnectionContext& connections);

// "timeout: no header within 10 s": the ERR reason when --header-timeout passes.
std::string header_timeout_reason(const UploadLimits& limits);

class UploadSession final : private Connection::Owner, private GroupSync::Hooks {
 public:
  using FinishedHandler = std::function<void(UploadSession&)>;

  // `ticket` holds the client's admission slots until the session is destroyed. `stream`: the
  // socket's stream when it has one already (a fork-mode child's, handed over mid-connection);
  // null makes one from the context's factory.
  UploadSession(UploadContext& context, Fd socket, std::uint64_t client_number, std::string peer,
                FinishedHandler on_finished, AdmissionTicket ticket = {},
                std::unique_ptr<ByteStream> stream = nullptr);
  UploadSession(const UploadSession&) = delete;
  UploadSession& operator=(const UploadSession&) = delete;
  ~UploadSession();

  // The server is stopping: an upload still in flight ends as incomplete with `ERR <reason>`;
  // a connection that sent nothing, or whose upload is done, is just closed.
  void abort(std::string_view reason);

  [[nodiscard]] std::uint64_t client_number() const noexcept { return client_number_; }
  [[nodiscard]] const std::string& peer() const noexcept { return peer_; }

  // Fork mode (see UploadContext::hand_off): what the child takes over from the parent's session.
  struct HandedOver {
    Fd socket;
    std::unique_ptr<ByteStream> stream;  // a TLS session goes on where the parent left it
    std::string read;                    // every byte read so far, from the first
    bool ended = false;                  // the client's end of input came after them
  };
  // In the child, inside hand_off: moved out without a system call (the loop is the parent's).
  [[nodiscard]] HandedOver take_in_child() noexcept;
  // The socket's number, for the descriptors a child keeps.
  [[nodiscard]] int socket_fd() const noexcept { return connection_->fd(); }
  // In the parent, once a child took the connection: its slots go with the child.
  [[nodiscard]] AdmissionTicket take_ticket() noexcept { return std::move(ticket_); }
  // In the child, on a session made from the HandedOver socket and stream: takes what the parent
  // read (header included) as if read now, then the end of input when it came.
  void replay(std::string_view read, bool ended);
  // True while bytes of an upload may still arrive (not yet replied to).
  [[nodiscard]] bool in_flight() const noexcept;

 private:
  enum class Phase {
    receiving,   // the parser is reading the header or the body
    committing,  // all bytes in, reading paused; the Committer makes the file durable, names it
    confirming,  // replied OK with confirm=1: reading the client's DONE (see kConfirmField)
    closing,     // replied (OK or ERR); the connection closes gracefully
    finished,
  };

  // Connection::Owner
  void on_data(std::string_view bytes) override;
  void on_end_of_input() override;
  void on_closed(std::string_view reason) override;
  void on_idle() override;

  void on_header_timeout();
  // Fork-mode parent: reads up to the end of the header, refusing what single mode refuses there.
  void screen(std::string_view bytes);
  // A failure, or a wrong token, in what the parser saw before the body: answered; true then.
  [[nodiscard]] bool refused_before_body(const UploadStep& step);
  // Why the token check fails this upload; nullopt when it passes.
  [[nodiscard]] std::optional<std::string> token_refusal(const UploadStart& start) const;
  void hand_off(bool ended);
  // Past its header: a header line ended, a raw upload's first kRawHeaderBytes, or a whole upload.
  [[nodiscard]] bool past_header() const;
  // The header is in (or a raw upload's first kRawHeaderBytes, or its end): the ticket leaves
  // the pre-header budget, and a fork-mode child tells its parent.
  void note_header_progress();
  // The server is full and this connection is the oldest without a complete header: closed now.
  void shed();
  [[nodiscard]] bool prepare_resume(const UploadHeader& header);
  void offer_resume();
  void continue_resume(std::uint64_t from);
  void checkpoint(bool last = false);
  // ack=1: tells the client `offset` bytes are held safely (an ACK line), while still receiving.
  void acknowledge(std::uint64_t offset);
  void send_ack();
  void act_on(const UploadStep& step);
  void start(const UploadStart& start);
  bool open_storage();
  void store(std::string_view bytes);
  void release_reservation() {
    if (disk_) disk_->release();
  }
  void check_rate();
  void complete();
  // The header asked about an upload this server had already saved (its completion record):
  // nothing was sent again; the reply is the OK the client never read.
  void complete_already_saved();
  // confirm=1: the OK, then the client's DONE is awaited (reading resumes, bounded).
  void reply_and_await_done(const std::string& line);
  // Bytes after such an OK: `DONE\n` removes the completion record; anything else leaves it.
  void read_done_line(std::string_view bytes);
  // Then (or at the end, a timeout, the server stopping: no DONE, the record stays) the close.
  void end_confirming();
  [[nodiscard]] bool open_completion_log(const UploadHeader& header);
  // This batch member as an earlier connection of the batch saved it; nullptr when not.
  [[nodiscard]] const CompletionLog::Entry* logged_member() const;
  void batch_confirmed();
  // A resumable upload's partial (and record), continued or new. False when it failed (replied).
  [[nodiscard]] bool claim_partial();
  // batch=1: saves the file (or makes the directory) at its relative path, replies and goes on
  // with the next header on the same connection.
  void complete_batch_member();
  [[nodiscard]] int batch_directory(const std::string& relative);
  void start_next_upload();
  // A batch with --sync full: OK lines wait for one syncfs that covers every file saved so far.
  void hold_until_synced(std::string line);
  // GroupSync::Hooks
  void synced_reply(const std::string& reply) override;
  void all_synced() override;
  void sync_failed(int error) override;
  void on_committed(CommitResult result);
  void log_received();
  void fail(const std::string& reason);
  void refuse_unauthorized(std::string why);
  void refuse_tls_client();
  void reply_and_close(const std::string& line);
  void finish();

  [[nodiscard]] std::string client_label() const;
  [[nodiscard]] double elapsed_seconds() const;

  UploadContext& context_;
  std::optional<Connection> connection_;
  AdmissionTicket ticket_;
  std::uint64_t client_number_;
  std::string peer_;
  FinishedHandler on_finished_;
  EventLoop::Clock::time_point started_;
  Phase phase_ = Phase::receiving;
  UploadParser parser_;
  std::string name_;
  bool has_header_ = false;        // began with a MUXUP/1 header line (not raw)
  bool header_complete_ = false;   // note_header_progress() has counted it
  std::string read_so_far_;        // fork-mode parent: every byte read, for the child
  bool ended_ = false;             // fork-mode parent: the end of input came before a child
  bool reply_with_name_ = false;   // the header asked for the saved name in OK (reply-name=1)
  std::uint64_t stored_ = 0;       // body bytes hashed (and written, with --output-dir)
  std::optional<DiskClaim> disk_;  // with --output-dir: --min-free and reservations
  ContentHash hash_;
  std::optional<PartialFile> file_;
  CommitTicket commit_ticket_;    // cancels the commit's callback if this session goes first
  bool connection_lost_ = false;  // it broke while committing: log the outcome, reply to no one
  EventLoop::TimerId header_timer_ = 0;
  EventLoop::TimerId rate_timer_ = 0;     // --min-rate: every kRateWindow
  std::uint64_t bytes_seen_ = 0;          // everything read, header included
  std::uint64_t bytes_at_window_ = 0;     // bytes_seen_ when the current window began
  EventLoop::TimerId refusal_timer_ = 0;  // a wrong token's delayed ERR unauthorized
  // Resumable uploads (a header with resume=): the partial is kept on interruption, with a
  // checkpoint (ResumeRecord) every kCheckpointInterval and at the end.
  bool resumable_ = false;
  bool resume_started_ = false;
  bool aborting_ = false;       // the server is stopping: an interruption, not a refusal  // the
                                // client's FROM line arrived: the data is the upload's
  ResumeRecord resume_record_;  // size, name, key and token hashes; offset and state per write
  Fd resume_record_file_;
  std::uint64_t resume_offer_ = 0;
  bool asked_ = false;              // the header asked for the offer (resume-ask=1)
  std::string already_saved_as_;    // the completion record found for it: saved under this name
  std::string already_saved_hash_;  // and its XXH3-128
  bool confirm_ = false;            // the header's confirm=1: the client will send DONE
  std::string done_line_;           // what came after such an OK, up to kDoneLine's length
  // A batch with batch-key=: its completion log, and the key it was opened for.
  std::optional<CompletionLog> completion_log_;
  std::string completion_log_key_;
  std::uint64_t next_checkpoint_ = 0;
  // --sync full: a checkpoint flushes on the Committer's thread; one at a time per upload.
  std::shared_ptr<std::atomic<bool>> checkpoint_pending_;
  // The header's ack=1: ACK lines before the reply. Without a resumable file, one per MiB stored.
  bool acks_ = false;
  bool ack_sent_ = false;
  std::uint64_t ack_pending_ = 0;  // the newest offset to acknowledge
  EventLoop::Clock::time_point last_ack_;
  EventLoop::TimerId ack_timer_ = 0;
  bool disk_full_ = false;  // a write met ENOSPC (or --min-free): keep the last checkpoint
  std::uint64_t next_ack_ = 0;
  // What a flushed checkpoint's acknowledgement, posted from the Committer's thread, finds: null
  // once this session is gone. Read and written on the loop's thread only.
  // Renewed for each upload of a batch, so a late checkpoint's ACK never reaches the next one.
  std::shared_ptr<UploadSession*> self_ = std::make_shared<UploadSession*>(this);
  // Batches (batch=1): this upload's header asked for one, and names a directory (dir=1).
  bool batch_ = false;
  bool dir_entry_ = false;
  std::uint64_t uploads_done_ = 0;  // batch members replied OK on this connection
  std::uint64_t bytes_done_ = 0;    // their bytes
  std::string subdir_path_;         // the last subdirectory a member was saved in, and its fd
  Fd subdir_;
  std::optional<GroupSync> group_sync_;  // --sync full: replies waiting for one syncfs
  bool close_after_replies_ = false;     // the held replies end with an ERR, or the batch ended
};

}  // namespace mux
