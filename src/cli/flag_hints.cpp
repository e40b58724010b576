#include "cli/flag_hints.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace mux {

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> previous(b.size() + 1);
  std::vector<std::size_t> current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string closest_name(const std::string& typed, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::string::npos;
  for (const std::string& candidate : candidates) {
    std::size_t distance = edit_distance(typed, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  // Two edits, or a third of a long name: "--colour" -> "--color", "--max-lines" -> "--max-line".
  std::size_t allowed = std::max<std::size_t>(2, best.size() / 3);
  return best_distance <= allowed ? best : std::string();
}

std::string unknown_flag_message(const std::string& typed, const std::vector<Subcommand>& table,
                                 const Subcommand* here) {
  std::string name = typed.substr(0, typed.find('='));
  std::vector<std::string> known;
  if (here == nullptr) {
    known = {"--help", "--version"};
  } else {
    known.emplace_back("--help");
    for (const FlagSpec& spec : here->flags.specs())
      known.push_back(spec.long_name);
  }
  std::string suggestion = name.rfind("--", 0) == 0 ? closest_name(name, known) : std::string();
  if (!suggestion.empty())
    return fmt::format("unknown flag '{}' (did you mean '{}'?)", name, suggestion);
  // A flag that another subcommand takes: say which, the person may have picked the wrong one.
  std::vector<std::string> owners;
  for (const Subcommand& other : table) {
    if (&other != here && other.flags.find(name) != nullptr) owners.push_back(other.name);
  }
  if (here != nullptr && !owners.empty()) {
    return fmt::format("{} takes no flag '{}' (that is a flag of {})", here->name, name,
                       fmt::join(owners, " and "));
  }
  return fmt::format("unknown flag '{}'", name);
}

}  // namespace mux
