// mux: one binary, four subcommands on one epoll core. See man mux(1).
#include <iostream>
#include <string>
#include <vector>

#include "cli/command_line.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  mux::CommandLine command_line;
  int status = command_line.parse(args, std::cout, std::cerr);
  if (status >= 0) return status;  // help and version check their own writes
  return mux::finish_standard_output(command_line.run());
}
