// The subcommand table: the four subcommands, what each is for, every flag each takes, and the
// function that runs it. The only file that knows all subcommands besides CommandLine, which
// parses with it; the completion scripts are generated from it too.
//
// To add a flag: give the options struct a member with its default, add one line to that
// subcommand's function in flag_table.cpp, and document it in man/mux.1 (tests/e2e/test_man.py
// checks that every flag is there).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "chat/chat_client.hpp"
#include "chat/chat_server.hpp"
#include "cli/flag_set.hpp"
#include "upload/upload_client.hpp"
#include "upload/upload_server.hpp"

namespace mux {

struct AllOptions {
  ChatServerOptions chat_server;
  ChatClientOptions chat_client;
  UploadServerOptions upload_server;
  UploadClientOptions upload_client;
  // Every subcommand's --config FILE and --check (only one subcommand is parsed per run).
  std::string config_file;
  bool check = false;
};

struct Subcommand {
  std::string name;
  std::string summary;
  bool is_server = false;
  FlagSet flags;  // refers into the AllOptions the table was made from
  // Mistakes between flags (--tls-cert without --tls-key), checked after parsing: the reason, or
  // "". A usage error like any bad value: exit 2 with the "Try ... --help" line.
  std::function<std::string()> usage_check;
  std::function<int()> run;
  // --check: validates what run() would load (TLS files, token file, output directory) without
  // serving or connecting. Returns what was checked, for the "configuration ok" line; throws
  // (std::exception) to say what is wrong.
  std::function<std::string()> check;
};

// The table, bound to `options` (which must outlive it and stay where it is).
std::vector<Subcommand> make_subcommands(AllOptions& options);

}  // namespace mux
