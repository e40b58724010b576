#include "chat/client_handshake.hpp"

#include <chrono>
#include <utility>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "core/tls/tls_stream.hpp"

namespace mux::chat {
namespace {
// After a reconnect, how many times (a second apart) to ask for our nick while a ghost holds it.
constexpr unsigned kReclaimTries = 10;
}  // namespace

ClientHandshake::ClientHandshake(EventLoop& loop, Events& events, RoomRoster& roster,
                                 std::string nick, std::string server, bool quiet,
                                 std::size_t max_line)
    : loop_(loop),
      events_(events),
      roster_(roster),
      nick_(std::move(nick)),
      server_(std::move(server)),
      quiet_(quiet),
      max_line_(max_line) {}

void ClientHandshake::connected() {
  phase_ = Phase::greeting;
  // (A mux server that died before it answered our first /cap counts as one we were in.)
  if (!ever_ready_ && !mux_server_) return;
  // Back again: the server is known to be a mux chat server, so everything goes at once and the
  // server handles it in order as soon as we are in the room: our nick first, then which of our
  // lines it has (the rest is sent again once it said), then where we were (it answers like
  // /cap ids, then replays what we missed).
  if (std::string nick = current_nick(); !nick.empty()) {
    send_reclaim(nick);
    reclaiming_ = nick;
    nick_refused_ = false;
    reclaim_tries_ = 0;
  }
  if (acks_) events_.send(ledger_.request());
  if (!epoch_.empty()) {
    events_.send(fmt::format("/since {} {}\n", epoch_, last_id_));
    recovering_ = true;
  } else {
    events_.send("/cap ids\n");
  }
}

void ClientHandshake::dropped() {
  loop_.cancel_timer(std::exchange(reclaim_timer_, 0));
  phase_ = Phase::greeting;
}

// Our nick back after a reconnect: with the secret of the session that held it the server hands
// it over at once, even while that session's ghost is still connected.
void ClientHandshake::send_reclaim(const std::string& nick) {
  if (nick_secret_.empty()) return events_.send(fmt::format("/nick {}\n", nick));
  events_.send(fmt::format("/reclaim {} {}\n", nick, nick_secret_));
}

std::string ClientHandshake::current_nick() const {
  const std::string& own = roster_.own_nick();
  if (!own.empty() && !own.starts_with("Client ")) return own;
  return nick_;
}

bool ClientHandshake::filter(std::string_view& line) {
  if (phase_ == Phase::greeting) {
    if (!greet(line)) return false;
    // -q: the welcome is about this session, not a line of the room (a script piping one line
    // in wants no output at all); Tab still learns our name from it.
    if (quiet_ && line.starts_with("* welcome, you are ")) {
      roster_.observe(sanitize(line));
      return false;
    }
  }
  if (acks_ && line.starts_with("* ")) {
    if (auto seen = ledger_.on_line(line)) {
      if (seen->answer) events_.resend_unconfirmed();
      return false;
    }
  }
  if (!reclaiming_.empty() && !nick_answer(line)) return false;
  if (phase_ == Phase::capping && !capped(line)) return false;
  if (std::exchange(names_follow_, false) && line.starts_with("* online (")) {
    // Who is here, with the answer to /cap ids: for Tab completion, not for the screen.
    roster_.observe(sanitize(line));
    return false;
  }
  if (mux_server_ && line.starts_with("* cap ids ")) {
    if (auto reply = parse_cap_reply(line)) {
      // The room's ids started again (a Redis room whose Redis lost them): from here on.
      epoch_ = std::string(reply->epoch);
      last_id_ = reply->last;
      return false;
    }
  }
  if (line.starts_with('@')) {
    if (auto with_id = parse_id_line(line)) {
      // Exactly once: a line replayed after a reconnect that we had already is skipped.
      if (with_id->id <= last_id_) return false;
      last_id_ = with_id->id;
      line = with_id->rest;
    }
  } else if (recovering_ && line.starts_with('[')) {
    // Back after a reconnect, lines relayed before our /since was answered come again in its
    // replay, with their ids: shown once, from there.
    return false;
  }
  return true;
}

// The server's first line: a chat server's welcome (or any other server's first words, as
// `ncat --chat` greets with its announcements), or what another kind of server says to a client
// that spoke first. False (and the run failed) when it is not a chat server.
bool ClientHandshake::greet(std::string_view line) {
  if (!ever_ready_) {
    // What a mux TLS port answers a plaintext client (without its newline).
    if (line == kTlsPortHint.substr(0, kTlsPortHint.size() - 1)) {
      events_.not_a_chat_server(
          fmt::format("{} speaks TLS on this port; connect with --tls", server_));
      return false;
    }
    if (line.starts_with("OK ") || line.starts_with("ERR ")) {
      events_.not_a_chat_server(
          fmt::format("{} is an upload-server, not a chat-server (it said \"{}\")", server_,
                      sanitize(line.substr(0, 200))));
      return false;
    }
  }
  if (ever_ready_ || mux_server_) {
    phase_ = Phase::capping;  // our /nick and /since went out at connect
    return true;
  }
  if (notice::session_end_reason(line)) {
    return true;  // a refusal ("* server full"): shown, and the close that follows says it
  }
  if (line.starts_with("* welcome, you are ")) {
    // A mux chat server: ask for message ids (and its limits, and who is here) before anything
    // typed goes out, so the lines can be cut to its --max-line. Acks: each line we send is
    // confirmed once the server stored it (in a Redis room, once Redis did), numbered under our
    // writer key so that a dropped connection's unconfirmed lines can be sent again exactly once.
    mux_server_ = true;
    phase_ = Phase::capping;
    if (!nick_.empty()) events_.send(fmt::format("/nick {}\n", nick_));
    events_.send(ledger_.request());
    events_.send("/cap ids\n");
    acks_ = true;
    return true;
  }
  // Another chat server (ncat --chat): it knows no commands of ours but --nick.
  if (!nick_.empty()) events_.send(fmt::format("/nick {}\n", nick_));
  become_ready();
  return true;
}

// While waiting for the answer to /cap ids (or /since): true when `line` is to be shown.
bool ClientHandshake::capped(std::string_view line) {
  if (auto reply = parse_cap_reply(line)) {
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

// Back after a reconnect, the answers to our /nick: true when `line` is to be shown. Our ghost
// (the connection the server has not yet seen die; on another server sharing the room through
// Redis, until its presence expires, about 5 s) may still hold the nick: we ask again every
// second for kReclaimTries seconds, the typed lines held meanwhile so that they go out under our
// name.
bool ClientHandshake::nick_answer(std::string_view line) {
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

void ClientHandshake::reclaim_later() {
  if (++reclaim_tries_ > kReclaimTries) {
    events_.notice(fmt::format("could not take back the nick {}: it is still taken", reclaiming_));
    reclaiming_.clear();
    nick_refused_ = false;
    return become_ready();
  }
  reclaim_timer_ = loop_.add_timer(std::chrono::seconds{1}, [this] {
    reclaim_timer_ = 0;
    if (phase_ == Phase::reclaiming) send_reclaim(reclaiming_);
  });
}

void ClientHandshake::become_ready() {
  if (nick_refused_ && !reclaiming_.empty()) {
    phase_ = Phase::reclaiming;
    return reclaim_later();
  }
  phase_ = Phase::ready;
  ever_ready_ = true;
  events_.handshake_done();
}

}  // namespace mux::chat
