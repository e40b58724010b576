#include "cli/completion.hpp"

#include <fmt/format.h>

namespace mux {
namespace {

constexpr const char* kHeader =
    "generated from mux's flag table (src/cli/flag_table.cpp) at build time; do not edit";

std::string join_names(const Subcommand& sub) {
  std::string names = "-h --help";
  for (const FlagSpec& spec : sub.flags.specs()) {
    names += ' ';
    if (!spec.short_name.empty()) names += spec.short_name + ' ';
    names += spec.long_name;
  }
  return names;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string joined;
  for (const std::string& word : words)
    joined += (joined.empty() ? "" : " ") + word;
  return joined;
}

// The bash `case "$prev"` arm that completes a flag's value, or "" when the flag takes none.
std::string bash_value_arm(const FlagSpec& spec) {
  std::string pattern =
      spec.short_name.empty() ? spec.long_name : spec.short_name + '|' + spec.long_name;
  switch (spec.kind) {
    case ValueKind::none:
      return "";
    case ValueKind::choice:
      return fmt::format("        {}) COMPREPLY=($(compgen -W '{}' -- \"$cur\")); return ;;\n",
                         pattern, join_words(spec.choices));
    case ValueKind::path:
      return fmt::format(
          "        {}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- \"$cur\")); "
          "return ;;\n",
          pattern);
    case ValueKind::directory:
      return fmt::format(
          "        {}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- \"$cur\")); "
          "return ;;\n",
          pattern);
    case ValueKind::host:
      return fmt::format("        {}) COMPREPLY=($(compgen -A hostname -- \"$cur\")); return ;;\n",
                         pattern);
    default:  // a number, a size, a duration, free text: nothing to offer but not a flag either
      return fmt::format("        {}) return ;;\n", pattern);
  }
}

// Text inside a zsh single-quoted _arguments spec: no quote, and none of []: unescaped.
std::string zsh_quote(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else if (c == '[' || c == ']' || c == ':' || c == '\\') {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

std::string zsh_action(const FlagSpec& spec) {
  std::string type = zsh_quote(spec.type_name.empty() ? "VALUE" : spec.type_name);
  switch (spec.kind) {
    case ValueKind::none:
      return "";
    case ValueKind::choice:
      return fmt::format(":{}:({})", type, join_words(spec.choices));
    case ValueKind::path:
      return fmt::format(":{}:_files", type);
    case ValueKind::directory:
      return fmt::format(":{}:_files -/", type);
    case ValueKind::host:
      return fmt::format(":{}:_hosts", type);
    default:
      return fmt::format(":{}: ", type);
  }
}

std::string zsh_spec(const FlagSpec& spec) {
  std::string help = zsh_quote(spec.help);
  std::string action = zsh_action(spec);
  std::string repeat = spec.repeatable ? "*" : "";
  if (spec.short_name.empty())
    return fmt::format("'{}{}[{}]{}'", repeat, spec.long_name, help, action);
  return fmt::format("'({} {})'{{{},{}}}'[{}]{}'", spec.short_name, spec.long_name, spec.short_name,
                     spec.long_name, help, action);
}

}  // namespace

std::string bash_completion(const std::vector<Subcommand>& subcommands) {
  std::string names;
  for (const Subcommand& sub : subcommands)
    names += (names.empty() ? "" : " ") + sub.name;
  std::string out = fmt::format("# bash completion for mux(1): {}\n", kHeader);
  out += "_mux() {\n";
  out += "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n";
  out += "    local sub=\"\" i\n";
  out += "    for ((i = 1; i < COMP_CWORD; i++)); do\n";
  out += fmt::format(
      "        case \"${{COMP_WORDS[i]}}\" in {}) sub=\"${{COMP_WORDS[i]}}\"; "
      "break ;; esac\n",
      [&] {
        std::string alternatives;
        for (const Subcommand& sub : subcommands)
          alternatives += (alternatives.empty() ? "" : "|") + sub.name;
        return alternatives;
      }());
  out += "    done\n";
  out += "    if [[ -z $sub ]]; then\n";
  out += fmt::format("        COMPREPLY=($(compgen -W '{} -h --help -V --version' -- \"$cur\"))\n",
                     names);
  out += "        return\n    fi\n";
  out += "    case \"$sub\" in\n";
  for (const Subcommand& sub : subcommands) {
    out += fmt::format("    {})\n        case \"$prev\" in\n", sub.name);
    for (const FlagSpec& spec : sub.flags.specs())
      out += bash_value_arm(spec);
    out += "        esac\n";
    out += fmt::format("        COMPREPLY=($(compgen -W '{}' -- \"$cur\")) ;;\n", join_names(sub));
  }
  out += "    esac\n}\ncomplete -F _mux mux\n";
  return out;
}

std::string zsh_completion(const std::vector<Subcommand>& subcommands) {
  std::string out = fmt::format("#compdef mux\n# zsh completion for mux(1): {}\n\n", kHeader);
  out += "_mux() {\n  local -a subcommands\n  subcommands=(\n";
  for (const Subcommand& sub : subcommands)
    out += fmt::format("    '{}:{}'\n", sub.name, zsh_quote(sub.summary));
  out += "  )\n";
  out += "  if (( CURRENT == 2 )); then\n";
  out += "    _describe -t subcommands 'mux subcommand' subcommands\n";
  out +=
      "    _arguments '(-h --help)'{-h,--help}'[Print help and exit]' "
      "'(-V --version)'{-V,--version}'[Print the version and exit]'\n";
  out += "    return\n  fi\n";
  out += "  local sub=$words[2]\n  shift words\n  (( CURRENT-- ))\n  case $sub in\n";
  for (const Subcommand& sub : subcommands) {
    out += fmt::format("    {})\n      _arguments -s \\\n", sub.name);
    out += "        '(-h --help)'{-h,--help}'[Print these options and exit]'";
    for (const FlagSpec& spec : sub.flags.specs())
      out += " \\\n        " + zsh_spec(spec);
    out += " ;;\n";
  }
  out += "  esac\n}\n\n_mux \"$@\"\n";
  return out;
}

}  // namespace mux
