#include "chat/chat_client.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "chat/line_editor.hpp"
#include "chat/room_roster.hpp"
#include "core/byte_stream.hpp"
#include "core/connection.hpp"
#include "core/event_loop.hpp"
#include "core/line_framer.hpp"
#include "core/net.hpp"
#include "core/output_queue.hpp"
#include "core/tls_stream.hpp"

namespace mux {
namespace {

constexpr std::size_t kReadBytes = 64 * 1024;
// Longest line shown or sent; any server's lines are cut here rather than held without bound.
constexpr std::size_t kMaxLine = 1 << 20;
// Reading stdin pauses while this much is still unsent, so a fast pipe cannot fill memory.
constexpr std::size_t kMaxUnsent = 1 << 20;
// Like the server: a line the server left unterminated is shown once it has been quiet this long.
constexpr std::chrono::milliseconds kQuietTime{100};
// After the end of input, how often to look whether the server is still taking our bytes.
constexpr std::chrono::milliseconds kConfirmCheck{250};
constexpr const char* kPrompt = "> ";

enum class InputKind {
  terminal,  // stdin and stdout are a terminal: libedit
  pollable,  // a pipe, socket or terminal that epoll can watch
  file,      // a regular file or /dev/null: epoll refuses these; read them in chunks
};

InputKind input_kind() {
  if (::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO)) return InputKind::terminal;
  struct stat info {};
  if (::fstat(STDIN_FILENO, &info) < 0) return InputKind::file;
  if (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode) || ::isatty(STDIN_FILENO))
    return InputKind::pollable;
  return InputKind::file;
}

void write_stdout(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(STDOUT_FILENO, text.data(), text.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write to stdout");
    }
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

// One chat client: the server connection, stdin, and the screen, in one event loop.
class ChatClient final : private Connection::Owner {
 public:
  ChatClient(const ChatClientOptions& options, ClientLink link)
      : server_(std::move(link.server)),
        connection_(connections_, std::move(link.socket), std::move(link.stream), *this),
        link_token_(std::move(link.token)),
        read_buffer_(kReadBytes),
        kind_(input_kind()),
        timestamps_(options.timestamps),
        nick_(options.nick),
        greeting_timeout_(options.link.connect_timeout),
        confirm_timeout_(options.confirm_timeout) {
    // The token goes first: a server with --token-file reads it before anything else (and
    // sends nothing before it).
    if (!link_token_.empty()) connection_.send(fmt::format("/token {}\n", link_token_));
  }

  int run() {
    loop_.on_signal(SIGINT, [this] { interrupted(SIGINT); });
    loop_.on_signal(SIGTERM, [this] { interrupted(SIGTERM); });
    if (kind_ == InputKind::terminal) {
      editor_ = std::make_unique<LineEditor>(kPrompt, [this](std::optional<std::string> line) {
        if (line) return typed_line(*line);
        end_of_input();
      });
      editor_->set_completer(
          [this](std::string_view before_cursor) { return roster_.complete(before_cursor); });
      loop_.on_signal(SIGWINCH, [this] {
        if (editor_) editor_->resize();
      });
    }
    resume_input();
    // Nothing typed is sent before the server greets us: a chat server speaks first, while an
    // upload-server (which would save our lines as a file) or a TLS port (which would drop them)
    // waits for us; lines typed meanwhile are held.
    greeting_timer_ = loop_.add_timer(greeting_timeout_, [this] {
      greeting_timer_ = 0;
      fail(fmt::format(
          "{} sent no chat welcome within {:g} s, so nothing was sent: not a chat server (an "
          "upload-server, or a TLS port without --tls?)",
          server_, std::chrono::duration<double>(greeting_timeout_).count()));
    });
    loop_.run();
    editor_.reset();  // give the terminal back before any last words on stderr
    if (!failure_.empty()) throw std::runtime_error(failure_);
    return status_;
  }

 private:
  // --- the server's side ---

  void on_data(std::string_view bytes) override {
    if (loop_.stopping() || bytes.empty()) return;
    incoming_.feed(bytes, [this](std::string_view line, bool cut) { show(line, cut); });
    flush_shown();
    rearm_quiet_timer(bytes.back() != '\n');
  }

  void on_end_of_input() override {
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    flush_shown();
    server_closed();
  }

  void on_closed(std::string_view reason) override {
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    flush_shown();
    // A TLS failure carries its own reason (an alert: "the server requires a client
    // certificate"), which says more than the errno.
    const IoResult& failure = connection_.failure();
    connection_failed(failure.status == IoResult::Status::failed ? failure.describe()
                                                                 : std::string(reason));
  }

  // Our queue went out after a write had to wait: stdin may be read again.
  void on_writable() override {
    if (waiting_for_drain_ && connection_.queued() == 0) {
      waiting_for_drain_ = false;
      resume_input();
    }
  }

  // The server's orderly close. Only after our own half-close, with no notice that it ended the
  // session, does it prove the server read every line we sent (it reads to our end of input
  // before closing; a server that drops unread bytes resets the connection instead).
  void server_closed() {
    if (!greeted_) {
      return fail(fmt::format(
          "connection to {} closed by the server before any chat welcome, so nothing was sent",
          server_));
    }
    if (end_reason_) return fail(fmt::format("{} ended the session: {}", server_, *end_reason_));
    if (!connection_.output_shut_down()) {
      return fail(fmt::format("connection to {} closed by the server{}", server_,
                              input_done_ ? " before all input was sent" : ""));
    }
    finish(0);
  }

  void show(std::string_view line, bool cut) {
    if (!greeted_ && !greet(line)) return;
    if (!end_reason_) {
      if (auto reason = chat::notice::session_end_reason(line)) end_reason_ = std::string(*reason);
    }
    append_timestamp();
    // A server that is not mux may send anything; nothing it sends reaches the terminal raw.
    std::size_t start = shown_.size();
    chat::append_sanitized(shown_, line, cut);
    if (kind_ == InputKind::terminal) roster_.observe(std::string_view(shown_).substr(start));
    shown_ += '\n';
  }

  // The server's first line: a chat server's welcome (or any other server's first words, as
  // `ncat --chat` greets with its announcements), or what another kind of server says to a
  // client that spoke first. False (and the run failed) when it is not a chat server.
  bool greet(std::string_view line) {
    // What a mux TLS port answers a plaintext client (without its newline).
    if (line == kTlsPortHint.substr(0, kTlsPortHint.size() - 1)) {
      fail(fmt::format("{} speaks TLS on this port; connect with --tls", server_));
      return false;
    }
    if (line.starts_with("OK ") || line.starts_with("ERR ")) {
      fail(fmt::format("{} is an upload-server, not a chat-server (it said \"{}\")", server_,
                       chat::sanitize(line.substr(0, 200))));
      return false;
    }
    greeted_ = true;
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    // --nick first, so the room knows our name before our first line.
    if (!nick_.empty()) connection_.send(fmt::format("/nick {}\n", nick_));
    if (!held_.empty()) connection_.send(make_block(std::exchange(held_, {})));
    if (input_done_) {
      finish_input();
    } else if (waiting_for_greeting_) {
      waiting_for_greeting_ = false;
      resume_input();
    }
    return true;
  }

  // --timestamps: the local time a line was shown, "HH:MM:SS ".
  void append_timestamp() {
    if (!timestamps_) return;
    std::time_t now = std::time(nullptr);
    std::tm local{};
    if (::localtime_r(&now, &local) == nullptr) return;
    char stamp[16];
    std::size_t length = std::strftime(stamp, sizeof stamp, "%H:%M:%S ", &local);
    shown_.append(stamp, length);
  }

  // On a terminal the editor took the sent line off the screen: show it as the room sees it,
  // "[NICK]: text" (the nick from the welcome, "you" until then); a command as typed.
  void show_own_line(std::string_view line) {
    if (!editor_ || line.empty()) return;
    append_timestamp();
    if (line.starts_with("/") && !line.starts_with("//")) {
      shown_ += kPrompt;
      chat::append_sanitized(shown_, line);
    } else {
      if (line.starts_with("//")) line.remove_prefix(1);  // the server strips the escape too
      const std::string& nick = roster_.own_nick();
      shown_ += '[';
      shown_ += nick.empty() ? std::string_view("you") : std::string_view(nick);
      shown_ += "]: ";
      chat::append_sanitized(shown_, line);
    }
    shown_ += '\n';
    flush_shown();
  }

  void flush_shown() {
    if (shown_.empty()) return;
    if (editor_) {
      editor_->print_above(shown_);
    } else {
      write_stdout(shown_);
    }
    shown_.clear();
  }

  void rearm_quiet_timer(bool mid_line) {
    loop_.cancel_timer(std::exchange(quiet_timer_, 0));
    if (!mid_line) return;
    quiet_timer_ = loop_.add_timer(kQuietTime, [this] {
      quiet_timer_ = 0;
      incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
      flush_shown();
    });
  }

  // A reset or a failed write: bytes we sent may have been thrown away unread (a server that
  // closes with input pending resets), so this is a failure even after our half-close.
  void connection_failed(const std::string& why) {
    if (loop_.stopping()) return;
    std::string what = fmt::format("connection to {}: {}", server_, why);
    if (end_reason_) what += fmt::format(" (the server ended the session: {})", *end_reason_);
    fail(std::move(what));
  }

  // --- stdin ---

  void resume_input() {
    if (input_done_ || input_watched_) return;
    if (kind_ == InputKind::file) {
      pump_timer_ = loop_.add_timer(std::chrono::milliseconds{0}, [this] {
        pump_timer_ = 0;
        read_stdin();
      });
      return;
    }
    input_watched_ = true;
    loop_.watch(STDIN_FILENO, EPOLLIN, [this](std::uint32_t events) {
      if (editor_ && !(events & (EPOLLHUP | EPOLLERR))) return editor_->read_input();
      if (editor_) return end_of_input();
      read_stdin();
    });
  }

  void pause_input() {
    if (input_watched_) loop_.unwatch(STDIN_FILENO);
    input_watched_ = false;
    loop_.cancel_timer(std::exchange(pump_timer_, 0));
  }

  void read_stdin() {
    ssize_t n = ::read(STDIN_FILENO, read_buffer_.data(), read_buffer_.size());
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
      typed_.flush_partial([this](std::string_view line, bool) { typed_line(line); });
      return end_of_input();
    }
    typed_.feed(std::string_view(read_buffer_.data(), static_cast<std::size_t>(n)),
                [this](std::string_view line, bool) { typed_line(line); });
    if (input_done_) return;
    if (!greeted_) {
      if (held_.size() > kMaxUnsent) {
        pause_input();
        waiting_for_greeting_ = true;  // greet() resumes
      } else if (kind_ == InputKind::file) {
        input_watched_ = false;
        resume_input();
      }
      return;
    }
    connection_.flush();  // what the kernel takes now does not count against the limit
    if (connection_.queued() > kMaxUnsent) {
      pause_input();
      waiting_for_drain_ = true;  // on_writable() resumes
    } else if (kind_ == InputKind::file) {
      input_watched_ = false;
      resume_input();
    }
  }

  void typed_line(std::string_view line) {
    if (input_done_) return;
    if (line == "exit" || line == "/quit") return end_of_input();
    if (!greeted_) {
      held_ += line;
      held_ += '\n';
    } else {
      std::string message(line);
      message += '\n';
      connection_.send(make_block(std::move(message)));
    }
    show_own_line(line);
  }

  // exit, /quit or end of input: send what was typed, half-close, and wait for the server.
  void end_of_input() {
    if (input_done_) return;
    input_done_ = true;
    pause_input();
    loop_.defer([this] { editor_.reset(); });  // not from inside the editor's own callback
    if (greeted_) finish_input();              // else greet() does, once the held lines are sent
  }

  void finish_input() {
    await_confirmation();
    // What was typed goes first, then our sending side ends (TLS: close_notify, then FIN), so
    // the server sees us leave cleanly; its lines are still read until it closes.
    connection_.shutdown_output();
  }

  // From the end of input until the server's close (its proof that it read everything we sent):
  // give up after --confirm-timeout without progress. Progress is our unsent bytes going down,
  // in our queue or the kernel's (a server reading slowly, as flow control does, is still
  // reading); once all are taken, only its close counts.
  void await_confirmation() {
    last_unsent_ = unsent_bytes();
    last_progress_ = EventLoop::Clock::now();
    loop_.add_periodic(kConfirmCheck, [this] {
      std::size_t unsent = unsent_bytes();
      auto now = EventLoop::Clock::now();
      if (unsent < last_unsent_) {
        last_unsent_ = unsent;
        last_progress_ = now;
        return;
      }
      if (now - last_progress_ < confirm_timeout_) return;
      double seconds = std::chrono::duration<double>(confirm_timeout_).count();
      if (unsent > 0) {
        return fail(
            fmt::format("{} took none of our last {} bytes for {:g} s, so they were not "
                        "delivered (see --confirm-timeout)",
                        server_, unsent, seconds));
      }
      fail(
          fmt::format("{} did not close the connection within {:g} s of the end of input, so "
                      "delivery of the last lines is unconfirmed (see --confirm-timeout)",
                      server_, seconds));
    });
  }

  // Bytes written but not yet acknowledged by the server's host: our queue plus the socket's.
  [[nodiscard]] std::size_t unsent_bytes() const { return connection_.unacknowledged(); }

  void interrupted(int signo) {
    status_ = 128 + signo;
    loop_.stop();
  }

  void finish(int status) {
    status_ = status;
    loop_.stop();
  }

  // Ends the run with status 1 and `why` as the one `mux: error:` line, printed once the
  // terminal is restored.
  void fail(std::string why) {
    if (loop_.stopping()) return;
    failure_ = std::move(why);
    finish(1);
  }

  EventLoop loop_;
  std::string server_;
  ConnectionContext connections_{loop_, kReadBytes};
  Connection connection_;   // plain TCP or TLS, its handshake done by open_client_link
  std::string link_token_;  // --token-file's first token, sent as /token first
  LineFramer incoming_{kMaxLine};
  LineFramer typed_{kMaxLine};
  std::vector<char> read_buffer_;
  std::string shown_;
  std::unique_ptr<LineEditor> editor_;
  InputKind kind_;
  bool timestamps_;
  std::string nick_;  // --nick, sent once the server has greeted us
  std::chrono::milliseconds greeting_timeout_;
  EventLoop::TimerId greeting_timer_ = 0;
  bool greeted_ = false;               // the server's first line arrived (see greet())
  std::string held_;                   // lines typed before it, sent once it comes
  bool waiting_for_greeting_ = false;  // stdin paused until then (held_ is full)
  chat::RoomRoster roster_;            // on a terminal: our nick and who is here, for Tab
  EventLoop::TimerId quiet_timer_ = 0;
  EventLoop::TimerId pump_timer_ = 0;
  bool input_watched_ = false;
  bool input_done_ = false;
  bool waiting_for_drain_ = false;  // stdin paused until the queue is written
  std::chrono::milliseconds confirm_timeout_;
  std::size_t last_unsent_ = 0;
  EventLoop::Clock::time_point last_progress_;
  int status_ = 0;
  std::optional<std::string> end_reason_;  // a notice said the server ended the session
  std::string failure_;                    // why the run failed, for the error line
};

}  // namespace

int run_chat_client(const ChatClientOptions& options) {
  ignore_sigpipe();
  ClientLink link = open_client_link(options.common.host,
                                     client_port(options.link, options.common.port), options.link);
  if (options.common.verbose) {
    fmt::print(stderr, "* connected to {} from {}\n", peer_address(link.socket.get()),
               local_address(link.socket.get()));
  }
  if (options.common.verbose && !link.session.empty())
    fmt::print(stderr, "* TLS: {}\n", link.session);
  ChatClient client(options, std::move(link));
  return client.run();
}

}  // namespace mux
