// What both upload serve modes share beyond the session: who gets in (the admission policy,
// with the shedding of connections that never finish their header) and the sweep of expired
// resumable partials. The single-loop server and the fork-mode parent call these with their own
// loop and listener.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>

#include "core/loop/admission.hpp"
#include "core/loop/connection.hpp"
#include "core/loop/event_loop.hpp"

namespace mux {

class Logger;
class OutputDirectory;

// At --max-clients, a connection still without a complete header after this long (or half of
// --header-timeout when that is shorter) is shed, the oldest first, for a newcomer. It is also
// about how long a newcomer waits while churners hold every slot, and how long an honest one has
// for its header (a fork and a TLS handshake on a loaded machine: 1 s was once too short).
inline constexpr std::chrono::milliseconds kShedAfter{2000};
[[nodiscard]] std::chrono::milliseconds pre_header_shed_after(
    std::chrono::milliseconds header_timeout);

// --keep-partial while the server runs: every quarter of it (at least 1 s, at most 10 min) the
// server removes resumable partials older than it that no connection holds, and logs how many;
// start-up does the same once. Both serve modes (the fork-mode parent) call it with their loop.
void sweep_expired_partials(EventLoop& loop, const OutputDirectory& directory, Logger& logger);
[[nodiscard]] std::chrono::milliseconds partial_sweep_interval(std::chrono::seconds keep_partial);

// Who may connect, from the flags.
struct UploadAdmission {
  std::uint64_t max_clients = 0;       // --max-clients; 0: what the fd (fork: machine) allows
  std::uint64_t max_per_address = 32;  // --max-per-address; 0: no limit
  std::function<bool(const sockaddr*, socklen_t)> allowed{};  // --allow / --deny; null: everyone
  StreamFactory refusal_stream{};  // TLS servers: refused clients are told inside TLS
  std::chrono::milliseconds shed_after = kShedAfter;  // pre_header_shed_after(--header-timeout)
};
// Both serve modes: past --max-clients newcomers wait in the backlog (while `has_room` says no),
// unless a connection has been without a complete header for `shed_after`: then the oldest such
// is shed for the newcomer, and a newcomer whose address already holds an eighth of
// --max-per-address (at least 2) of them is refused (churning sockets cannot pin the slots);
// past --max-per-address they are accepted and read "ERR server busy: ...".
AdmissionPolicy upload_admission_policy(const UploadAdmission& admission,
                                        std::function<bool()> has_room);

}  // namespace mux
