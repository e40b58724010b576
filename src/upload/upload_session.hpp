// UploadSession: one client connection of the upload server, from the first byte to the reply.
// Owns the socket, the running hash and (with --output-dir) the PartialFile. It decides whether
// the stream has a MUXUP/1 header, reads the body, replies OK or ERR and logs the outcome.
// Created by the single-loop server for each accepted connection, and by a fork-mode child for
// its one connection; both then only wait for on_finished.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/event_loop.hpp"
#include "core/fd.hpp"
#include "upload/content_hash.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_store.hpp"

namespace mux {

class Logger;
class OutputDirectory;

// Large reads amortize the syscall and the hash call, and with --output-dir make large writes.
inline constexpr std::size_t kUploadReadBufferSize = 1 << 20;
// On SIGINT/SIGTERM, how long uploads in flight get to finish before they end as incomplete.
inline constexpr std::chrono::seconds kShutdownGrace{5};

// What every session of one server (or of one fork-mode child) shares.
struct UploadContext {
  EventLoop& loop;
  Logger& logger;
  const OutputDirectory* output_dir = nullptr;  // null: count, hash and discard
  std::uint64_t max_size = 0;                   // 0: unlimited
  // One buffer per loop, not per connection: a session never keeps bytes between two reads,
  // so ten thousand idle uploads cost no buffer memory.
  std::span<char> read_buffer;
};

class UploadSession {
 public:
  using FinishedHandler = std::function<void(UploadSession&)>;

  UploadSession(UploadContext& context, Fd socket, std::uint64_t client_number, std::string peer,
                FinishedHandler on_finished);
  UploadSession(const UploadSession&) = delete;
  UploadSession& operator=(const UploadSession&) = delete;
  ~UploadSession();

  // The server is stopping: an upload still in flight ends as incomplete with `ERR <reason>`;
  // a connection that sent nothing, or whose upload is done, is just closed.
  void abort(std::string_view reason);

  [[nodiscard]] std::uint64_t client_number() const noexcept { return client_number_; }
  // True while bytes of an upload may still arrive (not yet replied to).
  [[nodiscard]] bool in_flight() const noexcept;

 private:
  enum class Phase {
    detecting,  // fewer than 8 bytes so far, all of them a prefix of "MUXUP/1 "
    header,     // inside the header line
    body,
    replied,  // OK sent; waiting for the client's EOF before closing
    finished,
  };

  void on_events(std::uint32_t events);
  // Still reading the upload: detecting, header or body (not yet replied to).
  [[nodiscard]] bool receiving() const noexcept;
  void on_connection_lost(int error);
  void read_upload();
  void drain_after_reply();
  void consume(std::string_view bytes);
  std::string_view consume_detecting(std::string_view bytes);
  std::string_view consume_header(std::string_view bytes);
  void consume_body(std::string_view bytes);
  void on_end_of_stream();

  void start_raw();
  void start_with_header(const UploadHeader& header);
  bool open_storage();
  void store(std::string_view bytes);
  [[nodiscard]] int reserve_disk_space(std::uint64_t needed);
  void complete();
  void fail(const std::string& reason);
  void send_reply(const std::string& line);
  void finish();

  [[nodiscard]] std::string client_label() const;
  [[nodiscard]] double elapsed_seconds() const;

  UploadContext& context_;
  Fd socket_;
  std::uint64_t client_number_;
  std::string peer_;
  FinishedHandler on_finished_;
  EventLoop::Clock::time_point started_;
  Phase phase_ = Phase::detecting;
  std::string header_line_;                     // the magic, then the header line as it arrives
  std::optional<std::uint64_t> expected_size_;  // from the header; raw uploads end at EOF
  std::string name_;
  std::uint64_t received_ = 0;
  std::uint64_t reserved_ = 0;  // disk space allocated ahead of the writes
  ContentHash hash_;
  std::optional<PartialFile> file_;
  bool peer_closed_ = false;
  EventLoop::TimerId linger_timer_ = 0;
};

}  // namespace mux
