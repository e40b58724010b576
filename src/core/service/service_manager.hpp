// The service manager (systemd) seam: where a server gets its listening socket, and how it tells
// the manager it is ready or stopping. Both servers call take_listener() where they used to call
// listen_tcp(), notify_ready() once the `listening on` line is out and notify_stopping() when a
// graceful shutdown begins. Built without libsystemd (meson finds none), socket activation and
// notifications are off: take_listener() always binds, and the notify calls do nothing.
//
// Fork mode: only the parent notifies. fork_child() calls forget_service_manager() in every
// child, so a child that shuts down its own loop never tells systemd the service is stopping.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/loop/fd.hpp"

namespace mux {

// A socket to accept on, non-blocking and close-on-exec. Under socket activation (LISTEN_FDS and
// LISTEN_PID name this process; e.g. a mux-chat.socket unit or systemd-socket-activate) it is the
// first socket passed, and `host`/`port` are not used; otherwise listen_tcp(host, port). An
// activation fd that is not a listening stream socket is an error (std::runtime_error), as a
// port in use would be. `activated` tells the log which it was.
Fd take_listener(const std::string& host, std::uint16_t port, bool& activated);

// ", socket activation" when `activated`: the tail of the `listening on ... (serve MODE...)` line.
inline const char* activation_note(bool activated) {
  return activated ? ", socket activation" : "";
}

// sd_notify("READY=1\nSTATUS=<status>"): with Type=notify, systemd starts dependent units (and
// `systemctl start` returns) only now. No-op outside systemd (NOTIFY_SOCKET unset).
void notify_ready(std::string_view status);

// sd_notify("RELOADING=1\nMONOTONIC_USEC=<now>") as a SIGHUP reload begins, and
// sd_notify("READY=1") once it is over: systemd (253 and later) keeps `systemctl reload` waiting
// in between, so it returns after the reload rather than as soon as the signal is sent.
void notify_reloading();
void notify_reloaded();

// sd_notify("STOPPING=1"): the shutdown is graceful and under way.
void notify_stopping(std::string_view status);

// In a fork-mode child: unsets NOTIFY_SOCKET, LISTEN_FDS and LISTEN_PID, so nothing the child
// does can speak for the service.
void forget_service_manager();

// True when mux was built with libsystemd.
bool has_service_manager_support();

}  // namespace mux
