#include "chat/chat_client.hpp"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chat/chat_protocol.hpp"
#include "chat/client_handshake.hpp"
#include "chat/client_terminal.hpp"
#include "chat/reconnect_backoff.hpp"
#include "chat/resend_queue.hpp"
#include "chat/room_roster.hpp"
#include "core/base/line_framer.hpp"
#include "core/base/units.hpp"
#include "core/loop/byte_stream.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/net.hpp"
#include "core/loop/output_queue.hpp"
#include "core/tls/tls_stream.hpp"

namespace mux {
namespace {

constexpr std::size_t kReadBytes = 64 * 1024;
// Longest line shown or sent; any server's lines are cut here rather than held without bound.
constexpr std::size_t kMaxLine = ClientScreen::kMaxLine;
// Reading stdin pauses while this much is still unsent, so a fast pipe cannot fill memory.
constexpr std::size_t kMaxUnsent = 1 << 20;
// Like the server: a line the server left unterminated is shown once it has been quiet this long.
constexpr std::chrono::milliseconds kQuietTime{100};
// After the end of input, how often to look whether the server is still taking our bytes.
constexpr std::chrono::milliseconds kConfirmCheck{250};

// One chat client: the server connection, stdin, and the screen, in one event loop. When the
// connection drops after the server greeted us, it reconnects (unless --no-reconnect), takes its
// nick again, recovers what the room said meanwhile by message id (/since), and sends what was
// typed while away and what the dropped connection left unconfirmed (those the server does not
// have: chat::SendLedger). What it says to the server around each connection is
// chat::ClientHandshake's.
class ChatClient final : private ClientInput::Events, private chat::ClientHandshake::Events {
 public:
  ChatClient(const ChatClientOptions& options, ClientLink link, const ClientRedial* redial)
      : server_(std::move(link.server)),
        link_token_(std::move(link.token)),
        redial_(redial),
        screen_(options.timestamps),
        handshake_(loop_, *this, roster_, options.nick, server_, options.common.quiet, kMaxLine),
        greeting_timeout_(options.link.connect_timeout),
        backoff_(options.reconnect_timeout, std::random_device{}()),
        confirm_timeout_(options.confirm_timeout) {
    if (redial_ != nullptr) connections_.handshake_timeout = redial_->timeout();
    attach(std::move(link.socket), std::move(link.stream));
  }

  int run() {
    loop_.on_signal(SIGINT, [this] { interrupted(SIGINT); });
    loop_.on_signal(SIGTERM, [this] { interrupted(SIGTERM); });
    input_.start();
    input_.resume();
    loop_.run();
    input_.release();  // give the terminal back before any last words on stderr
    if (!failure_.empty()) throw std::runtime_error(failure_);
    return status_;
  }

 private:
  // The Connection's owner for one connection: callbacks of a connection we replaced (its
  // deferred close) are recognised by the number and ignored.
  class Link final : public Connection::Owner {
   public:
    Link(ChatClient& client, unsigned number) : client_(client), number_(number) {}
    void on_data(std::string_view bytes) override {
      if (current()) client_.on_data(bytes);
    }
    void on_end_of_input() override {
      if (current()) client_.on_end_of_input();
    }
    void on_closed(std::string_view reason) override {
      if (current()) client_.on_closed(reason);
    }
    void on_ready() override {
      if (current()) client_.on_connected();
    }
    void on_writable() override {
      if (current()) client_.on_writable();
    }

   private:
    [[nodiscard]] bool current() const { return client_.link_number_ == number_; }
    ChatClient& client_;
    unsigned number_;
  };

  void attach(Fd socket, std::unique_ptr<ByteStream> stream) {
    link_ = std::make_unique<Link>(*this, ++link_number_);
    connection_ =
        std::make_unique<Connection>(connections_, std::move(socket), std::move(stream), *link_);
    incoming_ = LineFramer(kMaxLine);
    lines_on_link_ = 0;
    end_reason_.reset();
    away_ = false;
    greeting_timer_ = loop_.add_timer(greeting_timeout_, [this] {
      greeting_timer_ = 0;
      if (handshake_.ever_ready() || handshake_.mux_server())
        return lost(fmt::format("no welcome within {:g} s", seconds(greeting_timeout_)));
      fail(fmt::format(
          "{} sent no chat welcome within {:g} s, so nothing was sent: not a chat server (an "
          "upload-server, or a TLS port without --tls?)",
          server_, seconds(greeting_timeout_)));
    });
    // A TLS handshake driven by the connection (a reconnect) says when it is done.
    if (connection_->ready()) on_connected();
  }

  void on_connected() {
    // The token goes first: a server with --token-file reads it before anything else (and
    // sends nothing before it).
    if (!link_token_.empty()) connection_->send(fmt::format("/token {}\n", link_token_));
    // Nothing typed is sent before the server greets us: a chat server speaks first, while an
    // upload-server (which would save our lines as a file) or a TLS port (which would drop
    // them) waits for us; lines typed meanwhile are held.
    handshake_.connected();
  }

  static double seconds(std::chrono::milliseconds duration) {
    return std::chrono::duration<double>(duration).count();
  }

  // --- the server's side ---

  void on_data(std::string_view bytes) {
    if (loop_.stopping() || bytes.empty()) return;
    incoming_.feed(bytes, [this](std::string_view line, bool cut) { show(line, cut); });
    screen_.flush();
    rearm_quiet_timer(bytes.back() != '\n');
    if (waiting_for_acks_ && ledger().unconfirmed_bytes() <= kMaxUnsent / 2) {
      waiting_for_acks_ = false;
      resume_input();
    }
  }

  void on_end_of_input() {
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    screen_.flush();
    if (away_ || loop_.stopping()) return;
    server_closed();
  }

  void on_closed(std::string_view reason) {
    if (away_ || loop_.stopping()) return;
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    screen_.flush();
    if (away_ || loop_.stopping()) return;
    // A TLS failure carries its own reason (an alert: "the server requires a client
    // certificate"), which says more than the errno.
    const IoResult& failure = connection_->failure();
    connection_failed(failure.status == IoResult::Status::failed ? failure.describe()
                                                                 : std::string(reason));
  }

  // Our queue went out after a write had to wait: stdin may be read again.
  void on_writable() {
    if (waiting_for_drain_ && connection_ && connection_->queued() == 0) {
      waiting_for_drain_ = false;
      resume_input();
    }
  }

  // The server's orderly close. Only after our own half-close, with no notice that it ended the
  // session, does it prove the server read every line we sent (it reads to our end of input
  // before closing; a server that drops unread bytes resets the connection instead).
  void server_closed() {
    if (end_reason_ && !can_reconnect())
      return fail(fmt::format("{} ended the session: {}", server_, *end_reason_));
    if (!handshake_.ever_ready() && !handshake_.mux_server()) {
      return fail(fmt::format(
          "connection to {} closed by the server before any chat welcome, so nothing was sent",
          server_));
    }
    if (end_reason_) {
      if (can_reconnect() && transient(*end_reason_)) return lost(*end_reason_);
      return fail(fmt::format("{} ended the session: {}", server_, *end_reason_));
    }
    if (!connection_->output_shut_down()) {
      if (can_reconnect()) return lost("closed by the server");
      return fail(fmt::format("connection to {} closed by the server{}", server_,
                              input_.closed() ? " before all input was sent" : ""));
    }
    if (std::size_t unacked = ledger().unconfirmed(); unacked > 0) {
      // Numbered, they go again to a server that says which it has.
      if (can_reconnect() && ledger().numbered()) return lost("closed before confirming");
      return fail(
          fmt::format("{} closed the connection before confirming {} line{}: they may not "
                      "have been delivered",
                      server_, unacked, unacked == 1 ? "" : "s"));
    }
    finish_confirmed();
  }

  // An end the server announced that a later connection may not meet: a restart, a full server.
  static bool transient(std::string_view reason) {
    return reason == "server shutting down" || reason.starts_with("server full");
  }

  // Only a mux chat server (it sent its welcome) is reconnected to: it takes our nick and
  // /since back, where another server would relay them as lines.
  [[nodiscard]] bool can_reconnect() const {
    // (Once its welcome came: a server that dies while answering our /cap is reconnected to,
    // and greets us again.)
    return redial_ != nullptr && handshake_.mux_server();
  }

  void show(std::string_view line, bool cut) {
    if (!handshake_.filter(line)) return;
    if (!end_reason_) {
      if (auto reason = chat::notice::session_end_reason(line)) end_reason_ = std::string(*reason);
    }
    // A server that is not mux may send anything; nothing it sends reaches the terminal raw.
    roster_.observe(screen_.room_line(line, cut));
  }

  [[nodiscard]] chat::SendLedger& ledger() { return handshake_.ledger(); }

  // chat::ClientHandshake::Events

  void send(std::string_view text) override { connection_->send(text); }

  void not_a_chat_server(std::string why) override { fail(std::move(why)); }

  // The server said which of our numbered lines it has: the others go again, first, in order.
  void resend_unconfirmed() override {
    for (std::string& piece : ledger().resend()) {
      std::string out = piece + '\n';
      ledger().sent(std::move(piece));
      connection_->send(make_block(std::move(out)));
      ++lines_on_link_;
    }
  }

  // Lines may go out: those typed meanwhile first, in order.
  void handshake_done() override {
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    if (auto lasted = backoff_.back(EventLoop::Clock::now())) {
      notice(fmt::format("reconnected to {} after {:.1f} s", server_,
                         std::chrono::duration<double>(*lasted).count()));
    }
    for (const std::string& line : held_.take())
      send_line(line);
    if (input_.closed()) {
      finish_input();
    } else if (waiting_for_greeting_) {
      waiting_for_greeting_ = false;
      resume_input();
    }
  }

  // --- losing the connection, and coming back ---

  // The connection dropped (or the server is restarting): reconnect, or give up.
  void lost(const std::string& why) {
    if (!can_reconnect()) return fail(fmt::format("connection to {}: {}", server_, why));
    // Sent, not confirmed: the server may or may not have them. Numbered, they go again to the
    // next connection, which says which it has; else they are said, never sent again (that
    // could repeat them).
    if (std::size_t unacked = ledger().dropped(); unacked > 0) {
      notice(
          fmt::format("{} line{} sent just before the connection dropped {} not confirmed by "
                      "the server and may not have been delivered",
                      unacked, unacked == 1 ? "" : "s", unacked == 1 ? "was" : "were"));
    }
    bool acks = handshake_.acks();
    if (acks && input_.closed() && held_.empty() && ledger().unconfirmed() == 0)
      return finish_confirmed();
    if (!acks && input_.closed() && lines_on_link_ > 0) {
      // Our input is over and its last lines went out on this connection: only its close could
      // have confirmed them, and a new connection cannot (sending them again could repeat them).
      return fail(fmt::format(
          "connection to {} lost ({}) before the server confirmed our last lines: {} line{} "
          "sent on it may not have been delivered",
          server_, why, lines_on_link_, lines_on_link_ == 1 ? "" : "s"));
    }
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    loop_.cancel_timer(std::exchange(confirm_timer_, 0));
    handshake_.dropped();
    if (connection_) {
      connection_->close_now("reconnecting");
      loop_.retire(std::move(connection_));
      loop_.retire(std::move(link_));
    }
    auto now = EventLoop::Clock::now();
    if (!away_) {
      away_ = true;
      if (backoff_.lost(now))
        notice(fmt::format("connection to {} lost ({}); reconnecting", server_, why));
    }
    if (backoff_.expired(now)) {
      return fail(fmt::format("could not reconnect to {} within {:g} s (last: {}){}", server_,
                              seconds(backoff_.give_up_after()), why, unsent_note()));
    }
    reconnect_timer_ = loop_.add_timer(backoff_.next_wait(now), [this] {
      reconnect_timer_ = 0;
      connector_ = redial_->connect(loop_, [this](Fd socket, std::string error) {
        loop_.retire(std::move(connector_));
        if (!socket) return lost(error);
        int fd = socket.get();
        std::unique_ptr<ByteStream> stream = redial_->make_stream(fd);
        attach(std::move(socket), std::move(stream));
      });
    });
  }

  // A notice of the client's own: above the prompt on a terminal, on stderr in a pipe.
  void notice(const std::string& text) override { screen_.notice(text); }

  void rearm_quiet_timer(bool mid_line) {
    loop_.cancel_timer(std::exchange(quiet_timer_, 0));
    if (!mid_line) return;
    quiet_timer_ = loop_.add_timer(kQuietTime, [this] {
      quiet_timer_ = 0;
      incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
      screen_.flush();
    });
  }

  // A reset or a failed write: bytes we sent may have been thrown away unread (a server that
  // closes with input pending resets), so this is a failure even after our half-close, unless
  // we reconnect.
  void connection_failed(const std::string& why) {
    if (loop_.stopping()) return;
    if (can_reconnect() && (!end_reason_ || transient(*end_reason_))) return lost(why);
    std::string what = fmt::format("connection to {}: {}", server_, why);
    if (end_reason_) what += fmt::format(" (the server ended the session: {})", *end_reason_);
    fail(std::move(what));
  }

  // --- stdin ---

  void resume_input() { input_.resume(); }

  // ClientInput::Events: after a read of a pipe or file, whether to read on. Not while lines
  // cannot go out: before the greeting with the held lines' queue full (become_ready() resumes),
  // or with more than kMaxUnsent queued (on_writable() resumes).
  bool keep_reading() override {
    if (!handshake_.ready()) {
      if (!held_.full()) return true;
      waiting_for_greeting_ = true;
      return false;
    }
    if (ledger().unconfirmed_bytes() > kMaxUnsent) {
      // The server confirms more slowly than we send (a Redis room under load): read on once
      // it caught up (on_data), so what may have to be sent again stays bounded.
      waiting_for_acks_ = true;
      return false;
    }
    connection_->flush();  // what the kernel takes now does not count against the limit
    if (connection_->queued() <= kMaxUnsent) return true;
    waiting_for_drain_ = true;
    return false;
  }

  chat::Completion complete(std::string_view before_cursor) override {
    return roster_.complete(before_cursor);
  }

  void input_ended() override { end_of_input(); }

  void typed_line(std::string_view line) override {
    if (input_.closed()) return;
    if (line == "exit" || line == "/quit") return end_of_input();
    if (!handshake_.ready()) {
      if (held_.full() && input_.interactive()) {
        // Away for long on a terminal: the queue is bounded, and what does not fit is said.
        notice(fmt::format("not connected and {} already waiting: this line was not sent",
                           format_bytes(held_.bytes())));
        return;
      }
      held_.push(line);
    } else {
      send_line(line);
    }
    screen_.own_line(line, roster_.own_nick());
  }

  // One typed line to the server, cut into several where it is longer than the server's
  // --max-line (on character boundaries), so nothing is cut off there.
  void send_line(std::string_view line) {
    std::string out;
    std::size_t max_line = handshake_.max_line();
    std::vector<std::string> pieces = chat::split_line(line, max_line);
    if (pieces.size() > 1 && !told_split_) {
      told_split_ = true;
      notice(fmt::format("lines longer than the server's {} bytes are sent as several lines",
                         max_line));
    }
    for (std::string& piece : pieces) {
      out += piece;
      out += '\n';
      // The server acknowledges messages, not commands nor empty lines.
      if (handshake_.acks() && chat::SendLedger::is_message(piece)) ledger().sent(std::move(piece));
    }
    connection_->send(make_block(std::move(out)));
    ++lines_on_link_;
  }

  // exit, /quit or end of input: send what was typed, half-close, and wait for the server.
  void end_of_input() {
    if (input_.closed()) return;
    input_.close();
    if (handshake_.ready()) finish_input();  // else become_ready() does, once connected
  }

  void finish_input() {
    await_confirmation();
    // What was typed goes first, then our sending side ends (TLS: close_notify, then FIN), so
    // the server sees us leave cleanly; its lines are still read until it closes.
    connection_->shutdown_output();
  }

  // From the end of input until the server's close (its proof that it read everything we sent):
  // give up after --confirm-timeout without progress. Progress is our unsent bytes going down,
  // in our queue or the kernel's (a server reading slowly, as flow control does, is still
  // reading); once all are taken, only its close counts.
  void await_confirmation() {
    last_unsent_ = unsent_bytes();
    last_progress_ = EventLoop::Clock::now();
    loop_.cancel_timer(confirm_timer_);
    confirm_timer_ = loop_.add_periodic(kConfirmCheck, [this] {
      if (!connection_) return;
      std::size_t unsent = unsent_bytes();
      auto now = EventLoop::Clock::now();
      if (unsent < last_unsent_) {
        last_unsent_ = unsent;
        last_progress_ = now;
        return;
      }
      if (now - last_progress_ < confirm_timeout_) return;
      double secs = seconds(confirm_timeout_);
      if (unsent > 0) {
        return fail(
            fmt::format("{} took none of our last {} bytes for {:g} s, so they were not "
                        "delivered (see --confirm-timeout)",
                        server_, unsent, secs));
      }
      fail(
          fmt::format("{} did not close the connection within {:g} s of the end of input, so "
                      "delivery of the last lines is unconfirmed (see --confirm-timeout)",
                      server_, secs));
    });
  }

  // Bytes written but not yet acknowledged by the server's host: our queue plus the socket's.
  [[nodiscard]] std::size_t unsent_bytes() const { return connection_->unacknowledged(); }

  void interrupted(int signo) {
    status_ = 128 + signo;
    loop_.stop();
  }

  // Every line is done with: exit 0 only when each was confirmed and reached the whole room.
  void finish_confirmed() {
    std::vector<std::string> problems = ledger().problems(server_);
    if (!problems.empty()) return fail(fmt::format("{}", fmt::join(problems, "; ")));
    finish(0);
  }

  // The end of a give-up error line: what was typed and never sent, and what was sent and not
  // confirmed.
  [[nodiscard]] std::string unsent_note() {
    std::string note = held_.unsent_note();
    if (std::size_t unconfirmed = ledger().unconfirmed(); unconfirmed > 0) {
      note +=
          fmt::format("; {} sent line{} not confirmed", unconfirmed, unconfirmed == 1 ? "" : "s");
    }
    return note;
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
  unsigned link_number_ = 0;
  std::unique_ptr<Link> link_;
  std::unique_ptr<Connection> connection_;  // plain TCP or TLS; null while away
  std::string link_token_;                  // --token-file's first token, sent as /token first
  const ClientRedial* redial_;              // null: --no-reconnect
  std::unique_ptr<Connector> connector_;    // a reconnect under way
  LineFramer incoming_{kMaxLine};
  ClientScreen screen_;
  ClientInput input_{loop_, screen_, *this};  // stdin; after the screen it shows the editor on
  chat::RoomRoster roster_;          // our nick and who is here (Tab, and the nick to take back)
  chat::ClientHandshake handshake_;  // after the roster it uses
  std::chrono::milliseconds greeting_timeout_;
  EventLoop::TimerId greeting_timer_ = 0;
  EventLoop::TimerId reconnect_timer_ = 0;
  EventLoop::TimerId confirm_timer_ = 0;
  bool away_ = false;  // the connection dropped: reconnecting
  chat::ReconnectBackoff backoff_;
  chat::ResendQueue held_{kMaxUnsent};  // lines typed while not ready, sent in order once it is
  bool waiting_for_greeting_ = false;   // stdin paused until then (held_ is full)
  bool told_split_ = false;
  std::size_t lines_on_link_ = 0;  // typed lines written on the current connection
  EventLoop::TimerId quiet_timer_ = 0;
  bool waiting_for_drain_ = false;  // stdin paused until the queue is written
  bool waiting_for_acks_ = false;   // stdin paused until the server confirmed more
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
  std::optional<ClientRedial> redial;
  if (!options.no_reconnect)
    redial.emplace(options.common.host, client_port(options.link, options.common.port),
                   options.link);
  ChatClient client(options, std::move(link), redial ? &*redial : nullptr);
  return client.run();
}

}  // namespace mux
