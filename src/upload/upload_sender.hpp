// UploadSender: one upload seen from upload-client: the MUXUP/1 header, the file (or the stream)
// in large chunks hashed as they go out, the half-close, and the server's reply checked against
// the byte count and the XXH3-128 computed here. Owns its event loop, the Connection (the chunks
// go out with send_batch(), straight from the reader's buffers) and the running hash; created by
// run_upload_client() once the source is open and the connection is up.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/rate_limit.hpp"
#include "core/loop/byte_stream.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/connector.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/service/client_link.hpp"
#include "upload/chunk_reader.hpp"
#include "upload/content_hash.hpp"
#include "upload/upload_source.hpp"

namespace mux {

class ProgressDisplay;

class UploadSender final : private Connection::Owner {
 public:
  struct Result {
    std::uint64_t bytes = 0;  // sent by this run, every try together
    std::string hash;
    double seconds = 0;
    // Where the server saved the file (its reply's name=, made safe for a terminal); empty when
    // the server did not say (it discards, or it predates the field).
    std::string saved_name;
    std::uint64_t resumed_at = 0;  // bytes the server already had (a resumed upload)
  };

  enum class ResumeMode {
    off,     // a plain upload (no resume= field)
    fresh,   // resume= without resume-ask: the data follows the header from byte 0
    resume,  // resume-ask=1: continue what the server holds, when the file still matches it
  };

  // `server` ("127.0.0.1:5000") and `source_label` (the path) only name things in errors.
  // `stream` moves the bytes over `socket` (plain TCP, or TLS with its handshake done).
  UploadSender(UploadSource source, std::string source_label, std::string header_line, Fd socket,
               std::unique_ptr<ByteStream> stream, std::string server, ProgressDisplay& progress);

  // Gives up (run() throws) when sending makes no progress, or the reply does not come, for this
  // long; zero: never. Default 30 s.
  void set_stall_timeout(std::chrono::milliseconds timeout) noexcept { stall_timeout_ = timeout; }
  // --limit-rate: at most this many bytes of the file per second (a token bucket refilled by the
  // loop's clock, with a tenth of a second of burst); 0: as fast as the link goes.
  void set_rate_limit(std::uint64_t bytes_per_second);
  // The header carries resume= (fresh), and with resume-ask=1 (resume) the server answers
  // RESUME before the data, which then starts at the offset taken. Default off.
  void set_resume(ResumeMode mode) noexcept { resume_mode_ = mode; }

  // --retry: after a transient failure (the connection lost or refused, no progress for the
  // stall timeout, the server busy or shutting down) wait (1 s, doubling up to 30 s) and connect
  // again through `redial`, at most `count` times, within the stall timeout of the failure; a
  // resumable upload (ResumeMode not off) then sends `retry_header` (it asks for the offer) and
  // continues where the server's checkpoint ends, any other from its start. Only a file of known
  // size retries (a stream's bytes are gone once sent). `redial` must outlive run(). With a
  // `redial`, an ERR busy is waited for even when `count` is 0 (see kMaxBusyWaits).
  void set_retry(unsigned count, const ClientRedial* redial, std::string retry_header);

  // Sends everything and waits for the reply. Returns only when the server confirmed the byte
  // count and the hash; throws std::runtime_error with a message for people otherwise.
  Result run();

 private:
  void on_data(std::string_view bytes) override;
  void on_end_of_input() override;
  void on_closed(std::string_view reason) override;
  void on_writable() override { send_more(); }
  void on_ready() override { start_attempt(); }
  void start_attempt();
  // `busy`: for an ERR busy, which is waited for with or without --retry (its own count).
  [[nodiscard]] bool can_retry(bool busy = false) const;
  void schedule_retry(std::string why, bool busy = false);
  void redial();
  void on_redialed(Fd socket, std::string error);
  void send_more();
  void wait_for_chunk();
  [[nodiscard]] std::size_t rate_allowance();
  void pause_for_rate();
  void resume_after_rate_pause();
  void on_chunk_ready();
  void finish_sending();
  void on_send_error(const IoResult& error);
  void check_reply(const std::string& line);
  void confirm_reply(bool server_asked);
  void on_resume_offer(const std::string& line);
  void on_ack(const std::string& line);
  [[nodiscard]] std::optional<ContentHash> hash_of_prefix(std::uint64_t length);
  void start_reading(std::uint64_t from, ContentHash prefix);
  [[nodiscard]] std::uint64_t total_sent() const noexcept { return resumed_at_ + sent_; }
  // `transient`: a failure another try may not meet (see set_retry).
  void fail(std::string message, bool transient = false);
  void check_progress();
  void interrupt(int signo);
  [[nodiscard]] double elapsed_seconds() const;

  EventLoop loop_;
  UploadSource source_;
  std::string source_label_;
  std::string header_line_;
  std::size_t header_sent_ = 0;
  // Only the reply is read: one line.
  ConnectionContext connections_{loop_, 4096};
  std::unique_ptr<Connection> connection_;  // null between two tries
  std::string server_;
  ProgressDisplay& progress_;
  EventLoop::Clock::time_point started_;
  std::uint64_t sent_ = 0;         // file bytes this try sent
  std::uint64_t sent_before_ = 0;  // file bytes the earlier tries of this run sent
  std::chrono::milliseconds stall_timeout_{30'000};
  EventLoop::Clock::time_point last_progress_;
  std::optional<ChunkReader> reader_;  // after source_: it reads source_.file until destroyed
  std::size_t chunk_sent_ = 0;         // bytes of reader_->front() already sent
  bool waiting_for_chunk_ = false;
  ResumeMode resume_mode_ = ResumeMode::off;
  bool awaiting_offer_ = false;            // the header is out; the data waits for the RESUME line
  std::uint64_t resumed_at_ = 0;           // where this run's data starts in the file
  std::optional<TokenBucket> rate_limit_;  // --limit-rate; none: unlimited
  bool rate_paused_ = false;               // nothing is sent until the bucket refills
  std::string final_hash_;
  std::string saved_name_;  // from the OK reply, sanitized
  std::string reply_text_;
  // The server's last `ACK <offset>` (the header asked with ack=1): once one came, the progress
  // shows what the server holds safely rather than what left the socket. None from older servers.
  std::optional<std::uint64_t> acked_;
  bool sending_ = true;
  bool confirming_ = false;  // DONE sent after the OK: waiting for the server's close
  std::optional<std::string> failure_;
  int interrupted_by_ = 0;  // the signal that stopped the upload, if one did
  // --retry
  unsigned retry_limit_ = 0;
  unsigned retries_ = 0;     // tries made after the first
  unsigned busy_waits_ = 0;  // of them, after ERR busy (not counted in retries_)
  const ClientRedial* redial_ = nullptr;
  std::string retry_header_;
  std::unique_ptr<Connector> connector_;
  EventLoop::TimerId retry_timer_ = 0;
  // Set by the first failure since the upload last moved: no try starts after it.
  std::optional<EventLoop::Clock::time_point> retry_deadline_;
};

}  // namespace mux
