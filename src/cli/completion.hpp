// Shell completion scripts for bash and zsh, written from the subcommand table (flag_table.cpp)
// so they list exactly the flags the parser takes. The build runs src/cli/completion_main.cpp to
// write them, and `meson install` installs them; nothing in mux itself calls these.
#pragma once

#include <string>
#include <vector>

#include "cli/flag_table.hpp"

namespace mux {

// A bash script defining _mux and `complete -F _mux mux`: subcommands, each one's flags, and
// values where the table knows them (choices, files, directories, host names).
std::string bash_completion(const std::vector<Subcommand>& subcommands);

// A zsh #compdef script for the same, through _arguments (descriptions from the help text).
std::string zsh_completion(const std::vector<Subcommand>& subcommands);

}  // namespace mux
