// Hangup: what SIGHUP means to a server, and the reload hooks it runs. Each server owns one and
// routes SIGHUP to on_hangup(); parts that can be re-read while serving (TLS certificates, ...)
// register a hook with add_reload_hook() when they are set up.
//
// SIGHUP has two meanings, told apart by the controlling terminal:
// - the terminal (or ssh session) the server was started from went away: the person is gone,
//   so the server shuts down gracefully, as for SIGTERM, instead of dying mid-sentence;
// - otherwise (`systemctl reload`, `kill -HUP`): every reload hook runs, each outcome is logged,
//   and the server keeps serving. A hook that fails leaves the old state in use.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace mux {

class Logger;
class TlsServerContext;

class Hangup {
 public:
  // Records whether a controlling terminal is attached now.
  explicit Hangup(Logger& logger);

  // `reload` re-reads `what` ("the TLS certificate") and returns a short description of what is
  // now in use (may be empty), or throws (std::exception) to report failure; a failed reload
  // must leave the old state in use.
  void add_reload_hook(std::string what, std::function<std::string()> reload);

  enum class Action { reloaded, shut_down };
  // Call on SIGHUP: reloads and logs, or says the server should shut down (the terminal is gone).
  Action on_hangup();

 private:
  struct Hook {
    std::string what;
    std::function<std::string()> reload;
  };

  Logger& logger_;
  bool started_with_terminal_;
  std::vector<Hook> hooks_;
};

// Registers "the TLS certificate" (--tls-cert/--tls-key/--tls-client-ca re-read from their files)
// as a reload hook. New connections get the reloaded certificate; open ones keep theirs; a file
// that fails to load leaves the old certificate in use. `tls` must outlive `hangup`.
void reload_tls_on_hangup(Hangup& hangup, TlsServerContext& tls);

// True when this process has a controlling terminal that is still there.
bool has_controlling_terminal();

// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. A server calls it first thing, so one
// of them arriving before its event loop watches it (a script that signals as soon as it reads
// `listening on`) stays pending and is handled, instead of killing the process.
void block_server_signals();

}  // namespace mux
