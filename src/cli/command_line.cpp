#include "cli/command_line.hpp"

#include "cli/config_file.hpp"
#include "cli/flag_hints.hpp"
#include "cli/help_text.hpp"
#include "core/base/interrupted.hpp"
#include "core/loop/fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <ostream>
#include <unordered_map>

namespace mux {

// CLI11 only splits argv into flags and values and matches names; every value goes through the
// table's own FlagSpec::assign (as a transform, so errors are reported in the order typed), and
// every error is reworded here.
struct CommandLine::Parser {
  CLI::App app{"", "mux"};
  std::deque<std::string> sinks;  // CLI11 wants somewhere to store each option's text
  std::unordered_map<const CLI::Option*, const FlagSpec*> specs;
  std::unordered_map<const CLI::App*, const Subcommand*> subcommands;
};

namespace {

std::string hint_for(const std::string& subcommand) {
  return subcommand.empty()
             ? "Try 'mux --help' for more information.\n"
             : fmt::format("Try 'mux {} --help' for more information.\n", subcommand);
}

// Reads all of the --config file into `text`; returns why it could not, or "".
std::string read_config_file(const std::string& path, std::string& text) {
  // A config file is a few hundred bytes; the bound keeps a wrong path (a disk image, a pipe
  // that never ends) from being read whole.
  constexpr std::size_t kMaxConfigBytes = 1 << 20;
  Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (!file) return std::strerror(errno);
  struct stat status {};
  if (::fstat(file.get(), &status) == 0 && S_ISDIR(status.st_mode)) return std::strerror(EISDIR);
  char buffer[4096];
  while (true) {
    ssize_t got = ::read(file.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return std::strerror(errno);
    if (got == 0) return {};
    text.append(buffer, static_cast<std::size_t>(got));
    if (text.size() > kMaxConfigBytes) return "larger than 1 MiB (not a config file?)";
  }
}

}  // namespace

CommandLine::CommandLine()
    : table_(make_subcommands(options_)), parser_(std::make_unique<Parser>()) {
  CLI::App& app = parser_->app;
  app.set_help_flag("-h,--help");
  app.set_version_flag("-V,--version", "mux " MUX_VERSION);
  app.allow_extras();
  app.fallthrough(false);
  for (const Subcommand& subcommand : table_) {
    CLI::App* sub = app.add_subcommand(subcommand.name, subcommand.summary);
    parser_->subcommands[sub] = &subcommand;
    sub->set_help_flag("-h,--help");
    // Stray arguments are collected, not thrown, so parse() words the error itself.
    sub->allow_extras();
    for (const FlagSpec& spec : subcommand.flags.specs()) {
      CLI::Option* option = nullptr;
      if (!spec.takes_value()) {
        option = sub->add_flag(spec.names(), *spec.switch_value, spec.help);
      } else {
        option = sub->add_option(spec.names(), parser_->sinks.emplace_back(), spec.help);
        // As with getopt tools: a flag given twice takes the last value.
        // Repeatable flags see every value through assign() (CLI11 validates each occurrence).
        option->multi_option_policy(spec.repeatable ? CLI::MultiOptionPolicy::TakeAll
                                                    : CLI::MultiOptionPolicy::TakeLast);
        option->transform(
            CLI::Validator([&spec](std::string& text) { return spec.assign(text); }, ""));
      }
      parser_->specs[option] = &spec;
    }
  }
}

CommandLine::~CommandLine() = default;

const Subcommand* CommandLine::chosen() const {
  std::vector<CLI::App*> chosen = parser_->app.get_subcommands();
  if (chosen.empty()) return nullptr;
  return parser_->subcommands.at(chosen.front());
}

std::string CommandLine::selected() const {
  const Subcommand* subcommand = chosen();
  return subcommand == nullptr ? std::string() : subcommand->name;
}

std::string CommandLine::program_help() const {
  return program_help_text(table_);
}

std::string CommandLine::subcommand_help(const Subcommand& subcommand) const {
  return subcommand_help_text(subcommand);
}

int CommandLine::usage_error(std::ostream& err, const std::string& message) const {
  err << "mux: error: " << message << "\n" << hint_for(selected());
  return kExitUsage;
}

std::string CommandLine::unknown_flag_message(const std::string& typed) const {
  return mux::unknown_flag_message(typed, table_, chosen());
}

int CommandLine::parse(const std::vector<std::string>& argv, std::ostream& out, std::ostream& err) {
  std::vector<const char*> pointers;
  for (const std::string& arg : argv)
    pointers.push_back(arg.c_str());
  if (pointers.empty()) pointers.push_back("mux");
  CLI::App& app = parser_->app;
  auto write_out = [&out, &err](const std::string& text) {
    out << text;
    out.flush();
    if (out) return kExitSuccess;
    int error = errno;
    err << "mux: error: standard output: " << (error != 0 ? std::strerror(error) : "write failed")
        << "\n";
    return kExitFailure;
  };
  try {
    errno = 0;
    app.parse(static_cast<int>(pointers.size()), pointers.data());
  } catch (const CLI::CallForHelp&) {
    const Subcommand* subcommand = chosen();
    return write_out(subcommand == nullptr ? program_help() : subcommand_help(*subcommand));
  } catch (const CLI::CallForVersion&) {
    return write_out("mux " MUX_VERSION "\n");
  } catch (const CLI::ValidationError& error) {
    // Our own assign() wording, already prefixed with the flag's name by CLI11.
    return usage_error(err, error.what());
  } catch (const CLI::ParseError& error) {
    // A flag at the end without its value, or a switch given a value.
    std::string what = error.what();
    std::string flag = what.substr(0, what.find(':'));
    const Subcommand* subcommand = chosen();
    const FlagSpec* spec = subcommand == nullptr ? nullptr : subcommand->flags.find(flag);
    if (spec != nullptr && spec->takes_value())
      return usage_error(err,
                         fmt::format("{} needs a value ({})", spec->long_name, spec->type_name));
    if (spec != nullptr) return usage_error(err, fmt::format("{} takes no value", spec->long_name));
    return usage_error(err, what);
  }
  return check_parsed(argv, err);
}

int CommandLine::check_parsed(const std::vector<std::string>& argv, std::ostream& err) const {
  const CLI::App& app = parser_->app;
  std::vector<std::string> extra = app.remaining(true);
  const Subcommand* subcommand = chosen();
  // CLI11 reads `--verbose=3` as "verbose, three times"; a switch takes no value.
  for (const std::string& arg : argv) {
    if (arg == "--") break;
    std::size_t equals = arg.find('=');
    if (subcommand == nullptr || arg.rfind("--", 0) != 0 || equals == std::string::npos) continue;
    const FlagSpec* spec = subcommand->flags.find(arg.substr(0, equals));
    if (spec != nullptr && !spec->takes_value())
      return usage_error(err, fmt::format("{} takes no value", spec->long_name));
  }
  if (!extra.empty()) {
    const std::string& first = extra.front();
    if (first.size() > 1 && first[0] == '-') return usage_error(err, unknown_flag_message(first));
    if (subcommand != nullptr)
      return usage_error(err, fmt::format("unexpected argument '{}'", first));
    std::vector<std::string> names;
    for (const Subcommand& each : table_)
      names.push_back(each.name);
    std::string suggestion = closest_name(first, names);
    return usage_error(
        err, suggestion.empty()
                 ? fmt::format("unknown subcommand '{}'", first)
                 : fmt::format("unknown subcommand '{}' (did you mean '{}'?)", first, suggestion));
  }
  if (subcommand == nullptr) {
    err << program_help() << "\n";
    return usage_error(err,
                       "missing subcommand: chat-server, chat-client, upload-server or "
                       "upload-client");
  }
  std::vector<const FlagSpec*> from_file;
  if (int status = apply_config(*subcommand, from_file, err); status >= 0) return status;
  // Flags of one exclusive group (-v, -q, ...): name the first two as given.
  const CLI::App* sub = app.get_subcommands().front();
  std::unordered_map<std::string, const FlagSpec*> first_of_group;
  for (const CLI::Option* option : sub->parse_order()) {
    const FlagSpec* spec = parser_->specs.at(option);
    if (spec->exclusive_group.empty()) continue;
    auto [found, inserted] = first_of_group.emplace(spec->exclusive_group, spec);
    if (!inserted && found->second != spec) {
      return usage_error(err, fmt::format("{} and {} cannot be used together",
                                          found->second->long_name, spec->long_name));
    }
  }
  for (const auto& [option, spec] : parser_->specs) {
    bool in_file = std::find(from_file.begin(), from_file.end(), spec) != from_file.end();
    if (spec->is_required && option->count() == 0 && !in_file &&
        sub->get_option_no_throw(spec->long_name) == option)
      return usage_error(err, fmt::format("{} is required", spec->long_name));
  }
  if (subcommand->usage_check) {
    std::string why = subcommand->usage_check();
    if (!why.empty()) return usage_error(err, why);
  }
  return -1;
}

int CommandLine::apply_config(const Subcommand& subcommand, std::vector<const FlagSpec*>& from_file,
                              std::ostream& err) const {
  const std::string& path = options_.config_file;
  if (path.empty()) return -1;
  std::string text;
  std::string why = read_config_file(path, text);
  if (!why.empty()) return usage_error(err, fmt::format("--config {}: {}", path, why));
  ConfigParse parsed = parse_config_text(text);
  if (!parsed.error.empty())
    return usage_error(err, fmt::format("{}:{}: {}", path, parsed.error_line, parsed.error));

  // What the command line gave: those flags, and every flag of their exclusive groups, are not
  // taken from the file (flags on the command line win).
  const CLI::App* sub = parser_->app.get_subcommands().front();
  std::vector<const FlagSpec*> on_command_line;
  std::vector<std::string> groups_on_command_line;
  for (const CLI::Option* option : sub->parse_order()) {
    const FlagSpec* spec = parser_->specs.at(option);
    on_command_line.push_back(spec);
    if (!spec->exclusive_group.empty()) groups_on_command_line.push_back(spec->exclusive_group);
  }
  auto contains = [](const auto& list, const auto& value) {
    return std::find(list.begin(), list.end(), value) != list.end();
  };
  std::vector<std::string> names;
  for (const FlagSpec& spec : subcommand.flags.specs()) {
    if (spec.long_name != "--config" && spec.long_name != "--check")
      names.push_back(spec.long_name.substr(2));
  }
  std::unordered_map<const FlagSpec*, std::size_t> first_line;
  std::unordered_map<std::string, const ConfigSetting*> group_setter;
  for (const ConfigSetting& setting : parsed.settings) {
    auto fail = [&](const std::string& why) {
      return usage_error(err, fmt::format("{}:{}: {}", path, setting.line, why));
    };
    if (setting.name == "config" || setting.name == "check")
      return fail(fmt::format("'{}' is a command-line flag only, not a setting", setting.name));
    const FlagSpec* spec =
        contains(names, setting.name) ? subcommand.flags.find("--" + setting.name) : nullptr;
    if (spec == nullptr) {
      std::string suggestion = closest_name(setting.name, names);
      if (!suggestion.empty())
        return fail(
            fmt::format("unknown setting '{}' (did you mean '{}'?)", setting.name, suggestion));
      std::vector<std::string> owners;
      for (const Subcommand& other : table_) {
        if (&other != &subcommand && other.flags.find("--" + setting.name) != nullptr)
          owners.push_back(other.name);
      }
      if (!owners.empty())
        return fail(fmt::format("unknown setting '{}' ({} takes no such setting; {} {})",
                                setting.name, subcommand.name, fmt::join(owners, " and "),
                                owners.size() == 1 ? "does" : "do"));
      return fail(fmt::format("unknown setting '{}'", setting.name));
    }
    auto [earlier, first] = first_line.emplace(spec, setting.line);
    if (!first && !spec->repeatable)
      return fail(
          fmt::format("'{}' is set twice (first on line {}); only a repeatable flag's "
                      "setting may repeat",
                      setting.name, earlier->second));
    if (!spec->exclusive_group.empty()) {
      auto [other, inserted] = group_setter.emplace(spec->exclusive_group, &setting);
      if (!inserted && other->second->name != setting.name)
        return fail(fmt::format("'{}' and '{}' (line {}) cannot be used together", setting.name,
                                other->second->name, other->second->line));
    }
    // A value is checked even when the command line overrides it (a bad file must not wait for
    // the day the flag leaves the command line to be noticed): it is assigned, then the command
    // line's value again. A repeatable flag's values add up, so an overridden one is not checked.
    bool overridden =
        contains(on_command_line, spec) ||
        (!spec->exclusive_group.empty() && contains(groups_on_command_line, spec->exclusive_group));
    if (!spec->takes_value()) {
      static const std::vector<std::string> kTrue = {"true", "yes", "on", "1"};
      static const std::vector<std::string> kFalse = {"false", "no", "off", "0"};
      bool on = contains(kTrue, setting.value);
      if (!on && !contains(kFalse, setting.value))
        return fail(
            fmt::format("{}: '{}' is not true or false (a switch: true, false, yes, no, "
                        "on, off, 1 or 0)",
                        setting.name, setting.value));
      if (!overridden) *spec->switch_value = on;
    } else if (setting.value.empty()) {
      return fail(fmt::format("{}: needs a value ({})", setting.name, spec->type_name));
    } else if (!overridden || !spec->repeatable) {
      std::string why = spec->assign(setting.value);
      if (!why.empty()) return fail(fmt::format("{}: {}", setting.name, why));
      if (overridden) reassign_from_command_line(*spec);
    }
    if (!overridden) from_file.push_back(spec);
  }
  return -1;
}

void CommandLine::reassign_from_command_line(const FlagSpec& spec) const {
  for (const auto& [option, each] : parser_->specs) {
    // Exclusive groups: the flag given may be another of the group, which was not disturbed.
    if (each == &spec && option->count() > 0) (void)spec.assign(option->results().back());
  }
}

int CommandLine::run_check(const Subcommand& subcommand) const {
  try {
    std::string checked = subcommand.check();
    std::string source =
        options_.config_file.empty() ? std::string("flags") : "flags and " + options_.config_file;
    fmt::print("mux {}: configuration ok ({}{}{})\n", subcommand.name, source,
               checked.empty() ? "" : "; loaded ", checked);
    return kExitSuccess;
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "mux: error: {}\n", error.what());
    return kExitUsage;
  }
}

int CommandLine::run() {
  const Subcommand* subcommand = chosen();
  if (subcommand == nullptr) return kExitUsage;
  if (options_.check) return run_check(*subcommand);
  try {
    return subcommand->run();
  } catch (const Interrupted& interrupted) {
    std::fflush(stdout);
    fmt::print(stderr, "mux: error: {}\n", interrupted.what());
    return interrupted.exit_status();
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "mux: error: {}\n", error.what());
    return kExitFailure;
  }
}

int finish_standard_output(int status) {
  errno = 0;
  bool lost = std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!lost) return status;
  int error = errno;
  fmt::print(stderr, "mux: error: standard output: {}\n",
             error != 0 ? std::strerror(error) : "write failed");
  return status == kExitSuccess ? kExitFailure : status;
}

}  // namespace mux
