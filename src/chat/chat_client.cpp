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

// After a reconnect, how many times (a second apart) to ask for our nick while a ghost holds it.
constexpr unsigned kReclaimTries = 10;

// One chat client: the server connection, stdin, and the screen, in one event loop. When the
// connection drops after the server greeted us, it reconnects (unless --no-reconnect), takes its
// nick again, recovers what the room said meanwhile by message id (/since), and sends what was
// typed while away.
class ChatClient final : private ClientInput::Events {
 public:
  ChatClient(const ChatClientOptions& options, ClientLink link, const ClientRedial* redial)
      : server_(std::move(link.server)),
        link_token_(std::move(link.token)),
        redial_(redial),
        screen_(options.timestamps),
        quiet_(options.common.quiet),
        nick_(options.nick),
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

  // Nothing typed is sent before the server greets us: a chat server speaks first, while an
  // upload-server (which would save our lines as a file) or a TLS port (which would drop them)
  // waits for us; lines typed meanwhile are held.
  enum class Phase {
    greeting,    // connected, waiting for the server's first line
    capping,     // a mux server: waiting for the answer to /cap ids (or /since)
    reclaiming,  // back after a reconnect, our nick still held by our ghost: asking again
    ready,       // lines go out as typed
    away,        // the connection dropped: reconnecting
  };

  void attach(Fd socket, std::unique_ptr<ByteStream> stream) {
    link_ = std::make_unique<Link>(*this, ++link_number_);
    connection_ =
        std::make_unique<Connection>(connections_, std::move(socket), std::move(stream), *link_);
    incoming_ = LineFramer(kMaxLine);
    lines_on_link_ = 0;
    end_reason_.reset();
    phase_ = Phase::greeting;
    greeting_timer_ = loop_.add_timer(greeting_timeout_, [this] {
      greeting_timer_ = 0;
      if (ever_ready_)
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
    if (!ever_ready_) return;
    // Back again: the server is known to be a mux chat server, so everything goes at once and
    // the server handles it in order as soon as we are in the room: our nick first, then where
    // we were (it answers like /cap ids, then replays what we missed).
    if (std::string nick = current_nick(); !nick.empty()) {
      send_reclaim(nick);
      reclaiming_ = nick;
      nick_refused_ = false;
      reclaim_tries_ = 0;
    }
    if (acks_) connection_->send(std::string_view("/cap acks\n"));
    if (!epoch_.empty()) {
      connection_->send(fmt::format("/since {} {}\n", epoch_, last_id_));
      recovering_ = true;
    } else {
      connection_->send(std::string_view("/cap ids\n"));
    }
  }

  // Our nick back after a reconnect: with the secret of the session that held it the server
  // hands it over at once, even while that session's ghost is still connected.
  void send_reclaim(const std::string& nick) {
    if (nick_secret_.empty()) return connection_->send(fmt::format("/nick {}\n", nick));
    connection_->send(fmt::format("/reclaim {} {}\n", nick, nick_secret_));
  }

  [[nodiscard]] std::string current_nick() const {
    const std::string& own = roster_.own_nick();
    if (!own.empty() && !own.starts_with("Client ")) return own;
    return nick_;
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
  }

  void on_end_of_input() {
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    screen_.flush();
    if (phase_ == Phase::away || loop_.stopping()) return;
    server_closed();
  }

  void on_closed(std::string_view reason) {
    if (phase_ == Phase::away || loop_.stopping()) return;
    incoming_.flush_partial([this](std::string_view line, bool cut) { show(line, cut); });
    screen_.flush();
    if (phase_ == Phase::away || loop_.stopping()) return;
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
    if (!ever_ready_ && phase_ != Phase::ready) {
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
    if (acks_ && unacked_ > 0) {
      return fail(
          fmt::format("{} closed the connection before confirming {} line{}: they may not "
                      "have been delivered",
                      server_, unacked_, unacked_ == 1 ? "" : "s"));
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
    return redial_ != nullptr && ever_ready_ && mux_server_;
  }

  void show(std::string_view line, bool cut) {
    if (phase_ == Phase::greeting) {
      if (!greet(line)) return;
      // -q: the welcome is about this session, not a line of the room (a script piping one
      // line in wants no output at all); Tab still learns our name from it.
      if (quiet_ && line.starts_with("* welcome, you are ")) {
        roster_.observe(chat::sanitize(line));
        return;
      }
    }
    if (acks_ && line.starts_with("* ") && acknowledged(line)) return;
    if (!reclaiming_.empty() && !nick_answer(line)) return;
    if (phase_ == Phase::capping && !capped(line)) return;
    if (std::exchange(names_follow_, false) && line.starts_with("* online (")) {
      // Who is here, with the answer to /cap ids: for Tab completion, not for the screen.
      roster_.observe(chat::sanitize(line));
      return;
    }
    if (mux_server_ && line.starts_with("* cap ids ")) {
      if (auto reply = chat::parse_cap_reply(line)) {
        // The room's ids started again (a Redis room whose Redis lost them): from here on.
        epoch_ = std::string(reply->epoch);
        last_id_ = reply->last;
        return;
      }
    }
    if (line.starts_with('@')) {
      if (auto with_id = chat::parse_id_line(line)) {
        // Exactly once: a line replayed after a reconnect that we had already is skipped.
        if (with_id->id <= last_id_) return;
        last_id_ = with_id->id;
        line = with_id->rest;
      }
    } else if (recovering_ && line.starts_with('[')) {
      // Back after a reconnect, lines relayed before our /since was answered come again in its
      // replay, with their ids: shown once, from there.
      return;
    }
    if (!end_reason_) {
      if (auto reason = chat::notice::session_end_reason(line)) end_reason_ = std::string(*reason);
    }
    // A server that is not mux may send anything; nothing it sends reaches the terminal raw.
    roster_.observe(screen_.room_line(line, cut));
  }

  // The server's first line: a chat server's welcome (or any other server's first words, as
  // `ncat --chat` greets with its announcements), or what another kind of server says to a
  // client that spoke first. False (and the run failed) when it is not a chat server.
  bool greet(std::string_view line) {
    if (!ever_ready_) {
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
    }
    if (ever_ready_) {
      phase_ = Phase::capping;  // our /nick and /since went out at connect
      return true;
    }
    if (chat::notice::session_end_reason(line)) {
      return true;  // a refusal ("* server full"): shown, and the close that follows says it
    }
    if (line.starts_with("* welcome, you are ")) {
      // A mux chat server: ask for message ids (and its limits, and who is here) before
      // anything typed goes out, so the lines can be cut to its --max-line.
      mux_server_ = true;
      phase_ = Phase::capping;
      if (!nick_.empty()) connection_->send(fmt::format("/nick {}\n", nick_));
      // Acks: each line we send is confirmed once the server stored it (in a Redis room, once
      // Redis did), so a dropped connection tells which lines may be lost.
      connection_->send(std::string_view("/cap ids\n/cap acks\n"));
      acks_ = true;
      return true;
    }
    // Another chat server (ncat --chat): it knows no commands of ours but --nick.
    if (!nick_.empty()) connection_->send(fmt::format("/nick {}\n", nick_));
    become_ready();
    return true;
  }

  // While waiting for the answer to /cap ids (or /since): true when `line` is to be shown.
  bool capped(std::string_view line) {
    if (auto reply = chat::parse_cap_reply(line)) {
      if (reply->epoch != epoch_) {
        epoch_ = std::string(reply->epoch);
        last_id_ = reply->last;  // (a new epoch's replay starts from its first kept id)
        if (recovering_) last_id_ = 0;
      }
      max_line_ = reply->max_line;
      session_secret_ = std::string(reply->secret);
      // A nick this session holds is proven by this secret from now on; while a reclaim is in
      // flight the old session's secret is still the one that counts.
      if (reclaiming_.empty()) nick_secret_ = session_secret_;
      recovering_ = false;
      names_follow_ = true;
      become_ready();
      return false;  // the answer is for us, not for the screen
    }
    if (line == "* unknown command /cap (try /help)" ||
        line == "* unknown command /since (try /help)") {
      // An older mux server: no ids, no recovery.
      recovering_ = false;
      become_ready();
      return false;
    }
    return true;
  }

  // Back after a reconnect, the answers to our /nick: true when `line` is to be shown. Our
  // ghost (the connection the server has not yet seen die; on another server sharing the room
  // through Redis, until its presence expires, about 5 s) may still hold the nick: we ask again
  // every second for kReclaimTries seconds, the typed lines held meanwhile so that they go out
  // under our name.
  bool nick_answer(std::string_view line) {
    std::string refused = fmt::format("* nick {} ", reclaiming_);
    if (line.starts_with(refused) &&
        (line.ends_with(" is taken") || line.find(" looks too much like ") != line.npos)) {
      nick_refused_ = true;
      if (phase_ == Phase::reclaiming) reclaim_later();
      return false;
    }
    if (line.starts_with("* ") && line.ends_with(fmt::format(" is now {}", reclaiming_))) {
      reclaiming_.clear();
      nick_secret_ = session_secret_;
      nick_refused_ = false;
      if (phase_ == Phase::reclaiming) become_ready();
    }
    return true;
  }

  void reclaim_later() {
    if (++reclaim_tries_ > kReclaimTries) {
      notice(fmt::format("could not take back the nick {}: it is still taken", reclaiming_));
      reclaiming_.clear();
      nick_refused_ = false;
      return become_ready();
    }
    reclaim_timer_ = loop_.add_timer(std::chrono::seconds{1}, [this] {
      reclaim_timer_ = 0;
      if (connection_ && phase_ == Phase::reclaiming) send_reclaim(reclaiming_);
    });
  }

  void become_ready() {
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    if (nick_refused_ && !reclaiming_.empty()) {
      phase_ = Phase::reclaiming;
      return reclaim_later();
    }
    phase_ = Phase::ready;
    if (auto lasted = backoff_.back(EventLoop::Clock::now()); lasted && ever_ready_) {
      notice(fmt::format("reconnected to {} after {:.1f} s", server_,
                         std::chrono::duration<double>(*lasted).count()));
    }
    ever_ready_ = true;
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
    if (acks_ && unacked_ > 0) {
      // Sent, not confirmed: the server may or may not have them. Said, never sent again (it
      // could repeat them).
      unconfirmed_ += unacked_;
      notice(
          fmt::format("{} line{} sent just before the connection dropped {} not confirmed by "
                      "the server and may not have been delivered",
                      unacked_, unacked_ == 1 ? "" : "s", unacked_ == 1 ? "was" : "were"));
      unacked_ = 0;
    }
    if (acks_ && input_.closed() && held_.empty()) return finish_confirmed();
    if (!acks_ && input_.closed() && lines_on_link_ > 0) {
      // Our input is over and its last lines went out on this connection: only its close could
      // have confirmed them, and a new connection cannot (sending them again could repeat them).
      return fail(fmt::format(
          "connection to {} lost ({}) before the server confirmed our last lines: {} line{} "
          "sent on it may not have been delivered",
          server_, why, lines_on_link_, lines_on_link_ == 1 ? "" : "s"));
    }
    loop_.cancel_timer(std::exchange(greeting_timer_, 0));
    loop_.cancel_timer(std::exchange(confirm_timer_, 0));
    loop_.cancel_timer(std::exchange(reclaim_timer_, 0));
    if (connection_) {
      connection_->close_now("reconnecting");
      loop_.retire(std::move(connection_));
      loop_.retire(std::move(link_));
    }
    auto now = EventLoop::Clock::now();
    if (phase_ != Phase::away) {
      phase_ = Phase::away;
      if (backoff_.lost(now))
        notice(fmt::format("connection to {} lost ({}); reconnecting", server_, why));
    }
    if (backoff_.expired(now)) {
      return fail(fmt::format("could not reconnect to {} within {:g} s (last: {}){}", server_,
                              seconds(backoff_.give_up_after()), why, held_.unsent_note()));
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
  void notice(const std::string& text) { screen_.notice(text); }

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
    if (phase_ != Phase::ready) {
      if (!held_.full()) return true;
      waiting_for_greeting_ = true;
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
    if (phase_ != Phase::ready) {
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
    std::vector<std::string> pieces = chat::split_line(line, max_line_);
    if (pieces.size() > 1 && !told_split_) {
      told_split_ = true;
      notice(fmt::format("lines longer than the server's {} bytes are sent as several lines",
                         max_line_));
    }
    for (const std::string& piece : pieces) {
      out += piece;
      out += '\n';
      // The server acknowledges messages, not commands nor empty lines.
      if (acks_ && !piece.empty() && (!piece.starts_with('/') || piece.starts_with("//")))
        ++unacked_;
    }
    connection_->send(make_block(std::move(out)));
    ++lines_on_link_;
  }

  // exit, /quit or end of input: send what was typed, half-close, and wait for the server.
  void end_of_input() {
    if (input_.closed()) return;
    input_.close();
    if (phase_ == Phase::ready) finish_input();  // else become_ready() does, once connected
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

  // "* ack ID" (after /cap acks): one more line confirmed; ID 0: it reached only this server's
  // clients (the other servers of a Redis room were out of reach). True when `line` was one.
  bool acknowledged(std::string_view line) {
    if (line == "* cap acks") return true;
    if (!line.starts_with("* ack ")) return false;
    std::string_view digits = line.substr(6);
    std::uint64_t id = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
    if (digits.empty() || error != std::errc() || end != digits.data() + digits.size())
      return false;
    if (unacked_ > 0) --unacked_;
    if (id == 0) ++local_only_;
    return true;
  }

  // Every line is done with: exit 0 only when each was confirmed and reached the whole room.
  void finish_confirmed() {
    std::vector<std::string> problems;
    if (unconfirmed_ > 0) {
      problems.push_back(fmt::format(
          "{} line{} sent to {} just before a connection dropped {} "
          "not confirmed and may not have been delivered",
          unconfirmed_, unconfirmed_ == 1 ? "" : "s", server_, unconfirmed_ == 1 ? "was" : "were"));
    }
    if (local_only_ > 0) {
      problems.push_back(
          fmt::format("{} line{} reached only the clients of {}: the other servers "
                      "of the room were out of reach",
                      local_only_, local_only_ == 1 ? "" : "s", server_));
    }
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
  LineFramer incoming_{kMaxLine};
  ClientScreen screen_;
  ClientInput input_{loop_, screen_, *this};  // stdin; after the screen it shows the editor on
  bool quiet_;                                // -q: the welcome is not shown
  std::string nick_;                          // --nick, sent once the server has greeted us
  std::chrono::milliseconds greeting_timeout_;
  EventLoop::TimerId greeting_timer_ = 0;
  EventLoop::TimerId reconnect_timer_ = 0;
  EventLoop::TimerId confirm_timer_ = 0;
  Phase phase_ = Phase::greeting;
  bool ever_ready_ = false;  // the server was a chat server: a dropped connection is retried
  bool mux_server_ = false;  // it greeted with mux's welcome (knows /cap, /since)
  chat::ReconnectBackoff backoff_;
  chat::ResendQueue held_{kMaxUnsent};  // lines typed while not ready, sent in order once it is
  bool waiting_for_greeting_ = false;   // stdin paused until then (held_ is full)
  // Message ids (a mux server, /cap ids): the room's epoch and the last id seen, for /since.
  std::string epoch_;
  std::uint64_t last_id_ = 0;
  bool recovering_ = false;          // /since sent, its answer not yet in
  std::size_t max_line_ = kMaxLine;  // the server's --max-line, once it said it
  bool told_split_ = false;
  std::size_t lines_on_link_ = 0;  // typed lines written on the current connection
  // Acks (/cap acks, a mux server): lines sent and not yet confirmed on this connection; lines
  // a dropped connection left unconfirmed; lines confirmed as reaching this server's clients only.
  bool acks_ = false;
  std::size_t unacked_ = 0;
  std::size_t unconfirmed_ = 0;
  std::size_t local_only_ = 0;
  std::string reclaiming_;  // after a reconnect: the nick we asked back, until the answer
  // Reconnect secrets (/cap ids): the current session's, and that of the session holding our
  // nick (the one a reclaim proves); kept in this process only.
  std::string session_secret_;
  std::string nick_secret_;
  bool nick_refused_ = false;
  unsigned reclaim_tries_ = 0;
  EventLoop::TimerId reclaim_timer_ = 0;
  bool names_follow_ = false;  // the next line is the /who line that follows the /cap answer
  chat::RoomRoster roster_;    // our nick and who is here (Tab, and the nick to take back)
  EventLoop::TimerId quiet_timer_ = 0;
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
  std::optional<ClientRedial> redial;
  if (!options.no_reconnect)
    redial.emplace(options.common.host, client_port(options.link, options.common.port),
                   options.link);
  ChatClient client(options, std::move(link), redial ? &*redial : nullptr);
  return client.run();
}

}  // namespace mux
