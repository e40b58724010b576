// FlagSet: the flags of one subcommand, as data. cli/flag_table.cpp fills one FlagSet per
// subcommand (the one place a flag is added); CommandLine binds each FlagSpec into the parser,
// renders --help from them, and the shell completions are generated from them, so help,
// parsing and completion cannot drift apart. Every numeric flag has both bounds, checked when
// the flag is parsed, so no later arithmetic on it can overflow.
//
// No CLI11 here: a FlagSpec validates and stores through a plain function, so this header is
// all the table needs.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mux {

// What a flag's value is, for help ("BYTES"), for completion (a path, a directory, a host,
// one of some words) and for how the default is shown.
enum class ValueKind { none, text, path, directory, host, port, count, size, duration, choice };

struct CountBounds {
  std::uint64_t minimum;
  std::uint64_t maximum;
};

struct DurationBounds {
  std::chrono::milliseconds minimum;
  std::chrono::milliseconds maximum;
};

struct FlagSpec {
  std::string long_name;   // "--port"
  std::string short_name;  // "-v", or empty
  std::string help;
  std::string type_name;  // "PORT", "BYTES"; empty for a switch
  ValueKind kind = ValueKind::none;
  std::string default_text;  // shown as TYPE=DEFAULT in --help; empty: no default shown
  std::string limits_text;   // "1 to 1M": shown after the help text
  std::vector<std::string> choices;
  bool is_required = false;
  bool repeatable = false;  // every occurrence is assigned, in order (--allow, --deny)
  std::string exclusive_group;  // at most one flag of a group may be given
  // Validates the text as typed and stores the value; returns the reason it was refused
  // (without the flag's name), or an empty string. Unset for a switch.
  std::function<std::string(const std::string&)> assign;
  bool* switch_value = nullptr;  // set for a switch (a flag without a value)

  // "-v,--verbose" or "--port", as the parser takes names.
  [[nodiscard]] std::string names() const {
    return short_name.empty() ? long_name : short_name + "," + long_name;
  }
  [[nodiscard]] bool takes_value() const noexcept { return kind != ValueKind::none; }

  FlagSpec& required() {
    is_required = true;
    return *this;
  }
  // Flags in the same group exclude each other (-v, -q and --log-level).
  FlagSpec& exclusive(std::string group) {
    exclusive_group = std::move(group);
    return *this;
  }
};

class FlagSet {
 public:
  // `names` is "--long" or "-s,--long". Each adder reads the member's current value as the
  // default shown in --help, so set defaults in the options struct, not here.
  FlagSpec& text(const std::string& names, std::string& value, std::string help,
                 std::string type_name, ValueKind kind = ValueKind::text);
  FlagSpec& port(const std::string& names, std::uint16_t& value, std::string help);
  // A whole number, read as decimal ("010" is ten).
  // `type_name` says what is counted in --help ("N", "SECONDS").
  FlagSpec& count(const std::string& names, std::uint64_t& value, std::string help,
                  CountBounds bounds, std::string type_name = "N");
  // A byte count: "4096", "64K", "1MiB", "2G" (powers of 1024).
  // For count and size: a member left at 0 below a minimum of 1 means "unset" (no limit, or
  // chosen at run time) and no default is shown.
  FlagSpec& size(const std::string& names, std::uint64_t& value, std::string help,
                 CountBounds bounds);
  // "30" (seconds), "500ms", "30s", "5m", "1h".
  FlagSpec& duration(const std::string& names, std::chrono::milliseconds& value, std::string help,
                     DurationBounds bounds);
  FlagSpec& switch_flag(const std::string& names, bool& value, std::string help);
  // A flag that may be given many times (--allow CIDR --allow CIDR): `add_one` validates and
  // keeps each value in the order typed, returning the reason it was refused or "".
  FlagSpec& repeated(const std::string& names, std::string help, std::string type_name,
                     std::function<std::string(const std::string&)> add_one);
  // One word out of `choices`, each mapped to a value of the enum; `what` names the kind of
  // word in the error ("a serving mode").
  template <typename Enum>
  FlagSpec& choice(const std::string& names, Enum& value, std::string help, std::string what,
                   std::vector<std::pair<std::string, Enum>> choices) {
    std::vector<std::string> words;
    std::string shown;
    for (const auto& [word, each] : choices) {
      words.push_back(word);
      if (each == value) shown = word;
    }
    return add_choice(names, std::move(help), std::move(what), std::move(words), std::move(shown),
                      [&value, choices](std::size_t index) { value = choices[index].second; });
  }

  [[nodiscard]] const std::deque<FlagSpec>& specs() const noexcept { return specs_; }
  [[nodiscard]] const FlagSpec* find(const std::string& name) const;

 private:
  FlagSpec& add(const std::string& names, std::string help, std::string type_name, ValueKind kind);
  FlagSpec& add_choice(const std::string& names, std::string help, std::string what,
                       std::vector<std::string> words, std::string shown,
                       std::function<void(std::size_t)> store);

  std::deque<FlagSpec> specs_;  // a deque: the parser keeps pointers to the specs
};

// Text forms shared by help and errors: "4096", "64K", "1M"; "500ms", "30s", "5m".
std::string format_size_flag(std::uint64_t bytes);
std::string format_duration_flag(std::chrono::milliseconds duration);
// "30", "30s", "500ms", "2m", "1h"; false on anything else or on overflow.
bool parse_duration_flag(const std::string& text, std::chrono::milliseconds& out);

}  // namespace mux
