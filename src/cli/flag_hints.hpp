// What `mux` says about a flag it does not know: the likely typo ("did you mean '--color'?"),
// or the other subcommands that take it (the person may have picked the wrong subcommand).
// Pure: the subcommand table in, one error message out.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cli/flag_table.hpp"

namespace mux {

// Levenshtein distance, for "did you mean" suggestions.
[[nodiscard]] std::size_t edit_distance(const std::string& a, const std::string& b);

// The closest of `candidates` to `typed`, if it is close enough to be a likely typo (two edits,
// or a third of a long name); else "".
[[nodiscard]] std::string closest_name(const std::string& typed,
                                       const std::vector<std::string>& candidates);

// The error for `typed` (as given, maybe with "=VALUE"), unknown to `here` (null: before any
// subcommand) of `table`.
[[nodiscard]] std::string unknown_flag_message(const std::string& typed,
                                               const std::vector<Subcommand>& table,
                                               const Subcommand* here);

}  // namespace mux
