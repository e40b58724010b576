// Listener: the one accept path of every server. Owns the listening socket (through an Acceptor,
// which keeps the EMFILE reserve-fd trick), watches it in an EventLoop and applies the server's
// AdmissionPolicy to each newcomer: at the global cap newcomers wait in the kernel's backlog (the
// socket is unwatched until a slot frees) or are accepted and refused; past the per-address cap or
// the allowed() predicate they are accepted and refused. A refused client is told the policy's
// message and closed gracefully (so the message is not destroyed by a reset), at most
// kMaxRefusing at a time; beyond that the message gets one non-blocking send and the socket is
// closed at once. On a TLS port an address the allowed() predicate refuses is closed at once,
// with nothing written: telling it would take a handshake, work a denied peer must not get. Every
// limit that trips is logged, at most once a second per kind, with a count of what the quiet period
// swallowed. Owned by the server (chat-server, upload-server in both serve modes), which receives
// each admitted connection with its AdmissionTicket.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <unordered_map>

#include "core/loop/admission.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"
#include "core/loop/fd.hpp"
#include "core/loop/net.hpp"

namespace mux {

class Logger;

// A connection the policy let in: the socket, who it is, and the slots it holds.
struct Admitted {
  Fd fd;
  std::string peer;  // "127.0.0.1:40000", for logs
  SocketAddress address;
  AdmissionTicket ticket;
};

class Listener {
 public:
  using OnConnection = std::function<void(Admitted)>;

  // Refused clients being told why, at most; past this a refusal closes at once.
  static constexpr std::size_t kMaxRefusing = 64;
  // Accepts per wakeup, so a connection storm cannot starve the clients already served.
  static constexpr int kAcceptsPerWakeup = 256;

  Listener(EventLoop& loop, Fd listening_socket, Logger& logger, AdmissionPolicy policy,
           OnConnection on_connection);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Starts (or restarts, after the owner's has_room said no) accepting.
  void resume();
  // Stops accepting for good and closes the listening socket (shutdown).
  void close();
  // Closes a connection the owner took but will not serve, with a last line said the way a
  // refusal is (inside TLS when the policy's refusal_stream says so, within the refusals' cap
  // and deadlines): the fork-mode upload parent's ERR timeout and ERR server busy.
  void turn_away(Fd socket, const std::string& message);

  [[nodiscard]] int fd() const noexcept { return acceptor_.fd(); }
  // Admitted connections whose tickets are still held.
  [[nodiscard]] std::size_t connections() const noexcept { return counts_->total; }
  [[nodiscard]] std::size_t refusing() const noexcept { return refused_.size(); }

 private:
  class RefusedClient;
  // What the log says about one kind of tripped limit, once a second at most.
  struct TripLog {
    EventLoop::Clock::time_point last{};
    std::size_t swallowed = 0;
    EventLoop::TimerId summary_timer = 0;
  };
  enum Trip : std::size_t {
    kFull,
    kPerAddress,
    kNotAllowed,
    kWaiting,
    kOutOfFds,
    kShed,
    kTripKinds
  };

  void accept_pending();
  void admit(Acceptor::Accepted accepted);
  [[nodiscard]] bool owner_has_room() const;
  [[nodiscard]] bool at_global_cap() const;
  // shed_at_owner_cap: an unauthenticated connection has waited its shed_after.
  [[nodiscard]] bool can_shed_now() const;
  // shed_at_owner_cap, while full: watches the backlog again once the oldest unauthenticated
  // connection has waited its shed_after.
  void arm_shed_timer();
  void refuse(Acceptor::Accepted accepted, Refusal refusal);
  void say_and_close(Fd socket, const std::string& message);
  void forget_refused(RefusedClient& client);
  void set_watching(bool on);
  void trip(Trip kind, const std::string& line);
  friend void notify_slot_freed(Listener& listener);
  void on_slot_freed();

  EventLoop& loop_;
  Logger& logger_;
  Acceptor acceptor_;
  AdmissionPolicy policy_;
  OnConnection on_connection_;
  std::shared_ptr<AdmissionCounts> counts_;
  // Refusals are plain TCP even on a TLS listener: a short read buffer is all they need.
  ConnectionContext refusal_context_;
  std::unordered_map<RefusedClient*, std::unique_ptr<RefusedClient>> refused_;
  std::array<TripLog, kTripKinds> trips_{};
  EventLoop::TimerId shed_timer_ = 0;
  bool watching_ = false;
  bool closed_ = false;
};

}  // namespace mux
