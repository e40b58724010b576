#include "cli/help_text.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace mux {
namespace {

std::string left_column(const FlagSpec& spec) {
  std::string column = spec.names();
  if (!spec.takes_value()) return column;
  column += " " + spec.type_name;
  if (!spec.default_text.empty()) column += "=" + spec.default_text;
  if (spec.is_required) column += " REQUIRED";
  return column;
}

// Two columns, the help text wrapped to fit in 100: what --help prints the same on any terminal.
void append_rows(std::string& help, const std::vector<std::pair<std::string, std::string>>& rows) {
  constexpr std::size_t kLineWidth = 100;
  std::size_t width = 0;
  for (const auto& [left, right] : rows)
    width = std::max(width, left.size());
  width = std::min<std::size_t>(width, 30);
  for (const auto& [left, right] : rows) {
    std::vector<std::string> lines = wrap_help(right, kLineWidth - width - 4);
    if (left.size() > width) {
      help += fmt::format("  {}\n", left);
    } else {
      help += fmt::format("  {:{}}  {}\n", left, width, lines.front());
      lines.erase(lines.begin());
    }
    for (const std::string& line : lines)
      help += fmt::format("  {:{}}  {}\n", "", width, line);
  }
  std::replace(help.begin(), help.end(), '\x01', ' ');
}

}  // namespace

std::vector<std::string> wrap_help(const std::string& text, std::size_t width) {
  std::vector<std::string> lines(1);
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(start, end - start);
    start = end + 1;
    std::string& line = lines.back();
    bool fits = line.empty() || line.size() + 1 + word.size() <= width;
    if (fits) {
      line += (line.empty() ? "" : " ") + word;
    } else if (word.front() == '-' && line.find(' ') != std::string::npos) {
      // Take the word before along, so the continuation line starts with it, not with '-'.
      std::size_t last_space = line.rfind(' ');
      std::string carried = line.substr(last_space + 1) + " " + word;
      line.erase(last_space);
      lines.push_back(std::move(carried));
    } else {
      lines.push_back(word);
    }
  }
  return lines;
}

std::string program_help_text(const std::vector<Subcommand>& table) {
  std::string help =
      "mux: TCP group chat and upload server on one epoll core\n\n"
      "Usage: mux SUBCOMMAND [OPTIONS]\n"
      "       mux SUBCOMMAND --help    (the options of one subcommand; man mux for all of it)\n\n"
      "Options:\n";
  append_rows(help, {{"-h,--help", "Print this help and exit"},
                     {"-V,--version", "Print the version and exit"}});
  help += "\nSubcommands:\n";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const Subcommand& subcommand : table)
    rows.emplace_back(subcommand.name, subcommand.summary);
  append_rows(help, rows);
  return help;
}

std::string subcommand_help_text(const Subcommand& subcommand) {
  std::string help = fmt::format("Usage: mux {} [OPTIONS]\n\n{}\n\nOptions:\n", subcommand.name,
                                 subcommand.summary);
  std::vector<std::pair<std::string, std::string>> rows;
  rows.emplace_back("-h,--help", "Print this help and exit");
  for (const FlagSpec& spec : subcommand.flags.specs()) {
    std::string right = spec.help;
    if (!spec.limits_text.empty()) {
      // Kept on one line when wrapped: '\x01' is a space wrap_help() does not break at.
      std::string limits = spec.limits_text;
      std::replace(limits.begin(), limits.end(), ' ', '\x01');
      right += " [" + limits + "]";
    }
    rows.emplace_back(left_column(spec), right);
  }
  append_rows(help, rows);
  return help;
}

}  // namespace mux
