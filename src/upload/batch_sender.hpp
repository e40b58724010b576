// BatchSender: upload-client with a directory or several --file: every entry of an UploadTree
// over one connection, pipelined (MUXUP/1 batch=1: headers and data back to back, never waiting
// for a file's reply before sending the next), each reply checked in order against the byte
// count and the XXH3-128 computed here. Files up to kCheckpointInterval go out whole, header and
// data in one block; larger ones in 1 MiB chunks with their own resume key (derived from the
// batch's upload key and the path), and on a later run of the same command the server is asked
// (RESUME) where a started one ends. The BatchJournal says which files an earlier run had
// confirmed (not sent again) and which it started.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/loop/byte_stream.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "upload/content_hash.hpp"
#include "upload/upload_tree.hpp"

namespace mux {

class ProgressDisplay;

class BatchSender final : private Connection::Owner {
 public:
  struct Result {
    std::uint64_t files = 0;    // confirmed by this run
    std::uint64_t bytes = 0;    // file bytes sent by this run
    std::uint64_t skipped = 0;  // confirmed by an earlier run, not sent
  };

  // What run() throws when another try may succeed (--retry): the connection dropped or
  // stalled, the server closed it or answered busy, shutting down or timeout.
  class Dropped : public std::runtime_error {
   public:
    Dropped(const std::string& what, bool busy) : std::runtime_error(what), busy_(busy) {}
    // The server answered ERR busy: an earlier connection of this batch is still being saved,
    // which upload-client waits out with or without --retry.
    [[nodiscard]] bool busy() const noexcept { return busy_; }

   private:
    bool busy_;
  };

  // `batch_key`: the upload key (empty: nothing resumes); `ask`: an earlier run used it, so
  // the large files it started ask the server for its offer.
  BatchSender(const UploadTree& tree, BatchJournal& journal, std::string batch_key, bool ask,
              std::string token, Fd socket, std::unique_ptr<ByteStream> stream, std::string server,
              ProgressDisplay& progress);

  void set_stall_timeout(std::chrono::milliseconds timeout) noexcept { stall_timeout_ = timeout; }
  void set_rate_limit(std::uint64_t bytes_per_second) noexcept { rate_ = bytes_per_second; }
  // A --retry after a drop: the files the journal says are confirmed were this run's, so no
  // "confirmed by an earlier run" note (they still count in the progress).
  void set_retrying() noexcept { retrying_ = true; }
  // --retry is on: a stalled server is a failure to try again, not the end ("; giving up").
  void set_may_retry(bool may) noexcept { may_retry_ = may; }

  // Sends everything and waits for every reply; throws Dropped (transient), Interrupted (a
  // signal) or std::runtime_error, with a message for people, otherwise.
  Result run();
  // What this try confirmed and sent so far (after run() threw, too).
  [[nodiscard]] const Result& result() const noexcept { return result_; }

 private:
  struct Pending {
    std::size_t index;        // into the tree's entries
    std::string hash;         // of the whole file; empty while it is still being sent
    std::uint64_t acked = 0;  // the server's last ACK for it
  };

  void on_data(std::string_view bytes) override;
  void on_end_of_input() override;
  void on_closed(std::string_view reason) override;
  void on_writable() override { pump(); }
  void on_ready() override { pump(); }

  void pump();
  void send_entry(const TreeEntry& entry);
  void send_chunk();
  void start_streaming(const TreeEntry& entry, std::uint64_t from, ContentHash prefix);
  void on_line(const std::string& line);
  void on_offer(const std::string& line);
  void on_reply(const std::string& line);
  void end_batch();
  [[nodiscard]] bool pace(std::uint64_t bytes);
  [[nodiscard]] std::string file_key(const TreeEntry& entry) const;
  void show_progress();
  void check_progress();
  void interrupt(int signo);
  // `transient`: another try may not meet it (see Dropped).
  void fail(std::string message, bool transient = false);
  [[nodiscard]] double elapsed_seconds() const;

  EventLoop loop_;
  ConnectionContext connections_{loop_, 64 * 1024};
  const UploadTree& tree_;
  BatchJournal& journal_;
  std::string batch_key_;
  bool ask_;
  std::string token_;
  std::unique_ptr<Connection> connection_;
  std::string server_;
  ProgressDisplay& progress_;
  EventLoop::Clock::time_point started_;
  EventLoop::Clock::time_point last_progress_;
  std::chrono::milliseconds stall_timeout_{30'000};
  std::uint64_t rate_ = 0;  // --limit-rate; 0: unlimited
  EventLoop::Clock::time_point next_send_;
  bool rate_paused_ = false;

  std::size_t next_ = 0;         // the next entry to send
  std::deque<Pending> pending_;  // sent, not yet replied to, in order
  bool awaiting_offer_ = false;  // the last header asked RESUME: nothing more until it comes
  // The large file going out in chunks.
  std::optional<std::size_t> streaming_;
  Fd stream_file_;
  std::uint64_t stream_at_ = 0;
  ContentHash stream_hash_;
  bool output_done_ = false;
  bool server_confirms_ = false;  // an OK said confirm=1: DONE goes before the half-close
  bool confirming_ = false;       // DONE sent: waiting for the server's close

  std::string reply_text_;
  std::uint64_t confirmed_files_ = 0;  // this run and earlier ones
  std::uint64_t confirmed_bytes_ = 0;
  Result result_;
  std::optional<std::string> failure_;
  bool transient_ = false;
  bool busy_ = false;  // the failure is an ERR busy
  bool retrying_ = false;
  bool may_retry_ = false;
  int interrupted_by_ = 0;
};

}  // namespace mux
