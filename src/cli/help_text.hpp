// --help's text, rendered from the subcommand table (cli/flag_table.hpp): the program's (its
// subcommands) and each subcommand's (its flags, their values, defaults and limits). Two columns,
// the right one wrapped to fit in 100 columns, so --help prints the same on any terminal. Pure:
// text in, text out; the table is the only source, so help never disagrees with the parser.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cli/flag_table.hpp"

namespace mux {

[[nodiscard]] std::string program_help_text(const std::vector<Subcommand>& table);
[[nodiscard]] std::string subcommand_help_text(const Subcommand& subcommand);

// Splits `text` into lines of at most `width` columns at spaces (a longer word stays whole). A
// word that starts with '-' is never put first on a continuation line, so no wrapped line looks
// like a flag of its own. '\x01' is a space it does not break at (the caller turns it back).
[[nodiscard]] std::vector<std::string> wrap_help(const std::string& text, std::size_t width);

}  // namespace mux
