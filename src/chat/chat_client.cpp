#include "chat/chat_client.hpp"

#include <chrono>
#include <csignal>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "chat/chat_protocol.hpp"
#include "chat/client_ending.hpp"
#include "chat/client_handshake.hpp"
#include "chat/client_terminal.hpp"
#include "chat/confirm_watch.hpp"
#include "chat/current_link.hpp"
#include "chat/input_gate.hpp"
#include "chat/reconnect_backoff.hpp"
#include "chat/room_roster.hpp"
#include "chat/server_lines.hpp"
#include "chat/typed_lines.hpp"
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
        confirm_watch_(options.confirm_timeout) {
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
  // The handlers of the current connection (chat::CurrentLink drops a replaced one's).
  friend class chat::CurrentLink<ChatClient>;
  using Link = chat::CurrentLink<ChatClient>;
  [[nodiscard]] unsigned link_number() const noexcept { return link_number_; }
  void link_data(std::string_view bytes) { on_data(bytes); }
  void link_end_of_input() { on_end_of_input(); }
  void link_closed(std::string_view reason) { on_closed(reason); }
  void link_ready() { on_connected(); }
  void link_writable() { on_writable(); }

  void attach(Fd socket, std::unique_ptr<ByteStream> stream) {
    link_ = std::make_unique<Link>(*this, ++link_number_);
    connection_ =
        std::make_unique<Connection>(connections_, std::move(socket), std::move(stream), *link_);
    incoming_.new_link();
    typed_.new_link();
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
    incoming_.feed(bytes);
    if (gate_.confirmed(ledger().unconfirmed_bytes())) resume_input();
  }

  void on_end_of_input() {
    incoming_.flush();
    if (away_ || loop_.stopping()) return;
    server_closed();
  }

  void on_closed(std::string_view reason) {
    if (away_ || loop_.stopping()) return;
    incoming_.flush();
    if (away_ || loop_.stopping()) return;
    // A TLS failure carries its own reason (an alert: "the server requires a client
    // certificate"), which says more than the errno.
    const IoResult& failure = connection_->failure();
    connection_failed(failure.status == IoResult::Status::failed ? failure.describe()
                                                                 : std::string(reason));
  }

  // Our queue went out after a write had to wait: stdin may be read again.
  void on_writable() {
    if (connection_ && gate_.drained(connection_->queued())) resume_input();
  }

  // The server's orderly close: proof of delivery, a drop to mend, or a failure
  // (chat::server_closed says which).
  void server_closed() { act(chat::server_closed(end_facts())); }

  // What the client knows as a connection ends (chat/client_ending.hpp judges it).
  chat::EndFacts end_facts() {
    return {server_,
            incoming_.end_reason(),
            can_reconnect(),
            handshake_.ever_ready() || handshake_.mux_server(),
            connection_ != nullptr && connection_->output_shut_down(),
            input_.closed(),
            ledger().unconfirmed(),
            ledger().numbered()};
  }

  // Does what an ending says; false when it left the decision to the caller.
  bool act(const chat::Ending& ending) {
    switch (ending.action) {
      case chat::Ending::Action::reconnect:
        lost(ending.why);
        return true;
      case chat::Ending::Action::fail:
        fail(ending.why);
        return true;
      case chat::Ending::Action::delivered:
        finish_confirmed();
        return true;
      case chat::Ending::Action::go_on:
        break;
    }
    return false;
  }

  // Only a mux chat server (it sent its welcome) is reconnected to: it takes our nick and
  // /since back, where another server would relay them as lines.
  [[nodiscard]] bool can_reconnect() const {
    // (Once its welcome came: a server that dies while answering our /cap is reconnected to,
    // and greets us again.)
    return redial_ != nullptr && handshake_.mux_server();
  }

  [[nodiscard]] chat::SendLedger& ledger() { return handshake_.ledger(); }

  // chat::ClientHandshake::Events

  void send(std::string_view text) override { connection_->send(text); }

  void not_a_chat_server(std::string why) override { fail(std::move(why)); }

  // The server said which of our numbered lines it has: the others go again, first, in order.
  void resend_unconfirmed() override {
    std::string out = typed_.frame_resend(ledger());
    if (!out.empty()) connection_->send(make_block(std::move(out)));
  }

  // Lines may go out: those typed meanwhile first, in order.
  void handshake_done() override {
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    if (auto lasted = backoff_.back(EventLoop::Clock::now())) {
      notice(fmt::format("reconnected to {} after {:.1f} s", server_,
                         std::chrono::duration<double>(*lasted).count()));
    }
    for (const std::string& line : typed_.held().take())
      send_line(line);
    if (input_.closed()) {
      finish_input();
    } else if (gate_.greeted()) {
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
    // Our input may be over with every line confirmed (nothing to reconnect for), or, without
    // acks, with its last lines sent on this connection (only its close could confirm them).
    if (act(chat::after_loss(end_facts(), why, handshake_.acks(), !typed_.held().empty(),
                             typed_.lines_on_link())))
      return;
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
                              seconds(backoff_.give_up_after()), why,
                              typed_.unsent_note(ledger())));
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

  // A reset or a failed write: a drop to mend or a failure (chat::connection_failed).
  void connection_failed(const std::string& why) {
    if (loop_.stopping()) return;
    act(chat::connection_failed(end_facts(), why));
  }

  // --- stdin ---

  void resume_input() { input_.resume(); }

  // ClientInput::Events: after a read of a pipe or file, whether to read on (chat::InputGate:
  // handshake_done(), on_data() or on_writable() resumes).
  bool keep_reading() override {
    return gate_.keep_reading(handshake_.ready(), typed_.held().full(),
                              ledger().unconfirmed_bytes(), [this] {
                                connection_->flush();  // what the kernel takes does not count
                                return connection_->queued();
                              });
  }

  chat::Completion complete(std::string_view before_cursor) override {
    return roster_.complete(before_cursor);
  }

  void input_ended() override { end_of_input(); }

  void typed_line(std::string_view line) override {
    if (input_.closed()) return;
    if (line == "exit" || line == "/quit") return end_of_input();
    if (!handshake_.ready()) {
      if (typed_.held().full() && input_.interactive()) {
        // Away for long on a terminal: the queue is bounded, and what does not fit is said.
        notice(fmt::format("not connected and {} already waiting: this line was not sent",
                           format_bytes(typed_.held().bytes())));
        return;
      }
      typed_.held().push(line);
    } else {
      send_line(line);
    }
    screen_.own_line(line, roster_.own_nick());
  }

  // One typed line to the server, cut into several where it is longer than the server's
  // --max-line (on character boundaries), so nothing is cut off there.
  void send_line(std::string_view line) {
    std::size_t max_line = handshake_.max_line();
    std::string out = typed_.frame(line, max_line, handshake_.acks() ? &ledger() : nullptr);
    if (typed_.first_cut()) {
      notice(fmt::format("lines longer than the server's {} bytes are sent as several lines",
                         max_line));
    }
    connection_->send(make_block(std::move(out)));
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

  // From the end of input until the server's close: --confirm-timeout without progress ends
  // the run (chat::ConfirmWatch).
  void await_confirmation() {
    confirm_watch_.start(unsent_bytes(), EventLoop::Clock::now());
    loop_.cancel_timer(confirm_timer_);
    confirm_timer_ = loop_.add_periodic(kConfirmCheck, [this] {
      if (!connection_) return;
      std::size_t unsent = unsent_bytes();
      chat::ConfirmWatch::Verdict verdict = confirm_watch_.check(unsent, EventLoop::Clock::now());
      if (verdict != chat::ConfirmWatch::Verdict::waiting)
        fail(confirm_watch_.failure(verdict, server_, unsent));
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
  ClientScreen screen_;
  ClientInput input_{loop_, screen_, *this};  // stdin; after the screen it shows the editor on
  chat::RoomRoster roster_;          // our nick and who is here (Tab, and the nick to take back)
  chat::ClientHandshake handshake_;  // after the roster it uses
  chat::ServerLines incoming_{loop_, screen_, roster_, handshake_, kMaxLine};  // after all four
  std::chrono::milliseconds greeting_timeout_;
  EventLoop::TimerId greeting_timer_ = 0;
  EventLoop::TimerId reconnect_timer_ = 0;
  EventLoop::TimerId confirm_timer_ = 0;
  bool away_ = false;  // the connection dropped: reconnecting
  chat::ReconnectBackoff backoff_;
  chat::TypedLines typed_{kMaxUnsent};  // held while not ready, framed, counted per connection
  chat::InputGate gate_{kMaxUnsent};    // when stdin is read
  chat::ConfirmWatch confirm_watch_;    // --confirm-timeout after the end of input
  int status_ = 0;
  std::string failure_;  // why the run failed, for the error line
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
