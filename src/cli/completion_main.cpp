// Build-time tool: writes mux's bash or zsh completion script, generated from the same flag table
// the parser uses, to stdout. meson runs it (src/meson.build) and installs the output.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/completion.hpp"
#include "cli/flag_table.hpp"

int main(int argc, char** argv) {
  if (argc != 2 || (std::strcmp(argv[1], "bash") != 0 && std::strcmp(argv[1], "zsh") != 0)) {
    std::fputs("usage: mux-completion bash|zsh\n", stderr);
    return 2;
  }
  mux::AllOptions options;
  std::vector<mux::Subcommand> table = mux::make_subcommands(options);
  std::string script =
      std::strcmp(argv[1], "bash") == 0 ? mux::bash_completion(table) : mux::zsh_completion(table);
  if (std::fwrite(script.data(), 1, script.size(), stdout) != script.size() ||
      std::fflush(stdout) != 0)
    return 1;
  return 0;
}
