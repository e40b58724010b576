#include "cli/flag_set.hpp"

#include <fmt/format.h>

#include <limits>
#include <optional>

#include "core/base/units.hpp"

namespace mux {
namespace {

std::optional<std::uint64_t> parse_decimal(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return parse_size(text);  // digits only: plain decimal, nullopt on overflow
}

std::string out_of_range(const std::string& shown, const std::string& minimum,
                         const std::string& maximum, bool below) {
  return below ? fmt::format("{} is below the minimum of {}", shown, minimum)
               : fmt::format("{} is above the maximum of {}", shown, maximum);
}

}  // namespace

std::string format_size_flag(std::uint64_t bytes) {
  static constexpr const char* kSuffixes[] = {"T", "G", "M", "K"};
  for (int index = 0; index < 4; ++index) {
    unsigned shift = 10U * static_cast<unsigned>(4 - index);
    std::uint64_t unit = std::uint64_t{1} << shift;
    if (bytes != 0 && bytes % unit == 0)
      return fmt::format("{}{}", bytes >> shift, kSuffixes[index]);
  }
  return std::to_string(bytes);
}

std::string format_duration_flag(std::chrono::milliseconds duration) {
  auto ms = duration.count();
  if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

bool parse_duration_flag(const std::string& text, std::chrono::milliseconds& out) {
  std::size_t digits = text.find_first_not_of("0123456789");
  if (digits == 0 || text.empty()) return false;
  std::string number = text.substr(0, digits == std::string::npos ? text.size() : digits);
  std::string unit = digits == std::string::npos ? "" : text.substr(digits);
  std::optional<std::uint64_t> value = parse_decimal(number);
  if (!value) return false;
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "s") {
    scale = 1000;
  } else if (unit == "ms") {
    scale = 1;
  } else if (unit == "m" || unit == "min") {
    scale = 60'000;
  } else if (unit == "h") {
    scale = 3'600'000;
  } else {
    return false;
  }
  // A year is far beyond any bound a flag has; refusing more keeps the product in range.
  constexpr std::uint64_t kLongest = 366ULL * 24 * 3'600'000;
  if (*value > kLongest / scale) return false;
  out = std::chrono::milliseconds(static_cast<std::int64_t>(*value * scale));
  return true;
}

const FlagSpec* FlagSet::find(const std::string& name) const {
  for (const FlagSpec& spec : specs_) {
    if (spec.long_name == name || (!spec.short_name.empty() && spec.short_name == name))
      return &spec;
  }
  return nullptr;
}

FlagSpec& FlagSet::add(const std::string& names, std::string help, std::string type_name,
                       ValueKind kind) {
  FlagSpec& spec = specs_.emplace_back();
  std::size_t comma = names.find(',');
  if (comma == std::string::npos) {
    spec.long_name = names;
  } else {
    spec.short_name = names.substr(0, comma);
    spec.long_name = names.substr(comma + 1);
  }
  spec.help = std::move(help);
  spec.type_name = std::move(type_name);
  spec.kind = kind;
  return spec;
}

FlagSpec& FlagSet::repeated(const std::string& names, std::string help, std::string type_name,
                            std::function<std::string(const std::string&)> add_one) {
  FlagSpec& spec = add(names, std::move(help), std::move(type_name), ValueKind::text);
  spec.repeatable = true;
  spec.assign = std::move(add_one);
  return spec;
}

FlagSpec& FlagSet::text(const std::string& names, std::string& value, std::string help,
                        std::string type_name, ValueKind kind) {
  FlagSpec& spec = add(names, std::move(help), std::move(type_name), kind);
  spec.default_text = value;
  spec.assign = [&value](const std::string& text) -> std::string {
    value = text;
    return {};
  };
  return spec;
}

FlagSpec& FlagSet::port(const std::string& names, std::uint16_t& value, std::string help) {
  FlagSpec& spec = add(names, std::move(help), "PORT", ValueKind::port);
  spec.default_text = std::to_string(value);
  spec.assign = [&value](const std::string& text) -> std::string {
    std::optional<std::uint64_t> parsed = parse_decimal(text);
    if (!parsed || *parsed > 65535) return fmt::format("'{}' is not a port number (0-65535)", text);
    value = static_cast<std::uint16_t>(*parsed);
    return {};
  };
  return spec;
}

FlagSpec& FlagSet::count(const std::string& names, std::uint64_t& value, std::string help,
                         CountBounds bounds, std::string type_name) {
  FlagSpec& spec = add(names, std::move(help), std::move(type_name), ValueKind::count);
  if (!(value == 0 && bounds.minimum > 0)) spec.default_text = std::to_string(value);
  spec.limits_text = fmt::format("{} to {}", bounds.minimum, bounds.maximum);
  spec.assign = [&value, bounds](const std::string& text) -> std::string {
    std::optional<std::uint64_t> parsed = parse_decimal(text);
    if (!parsed) {
      // Digits that overflow are still a number, just far too big.
      if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos)
        return fmt::format("{} is above the maximum of {}", text, bounds.maximum);
      return fmt::format("'{}' is not a whole number", text);
    }
    if (*parsed < bounds.minimum || *parsed > bounds.maximum) {
      return out_of_range(text, std::to_string(bounds.minimum), std::to_string(bounds.maximum),
                          *parsed < bounds.minimum);
    }
    value = *parsed;
    return {};
  };
  return spec;
}

FlagSpec& FlagSet::size(const std::string& names, std::uint64_t& value, std::string help,
                        CountBounds bounds) {
  FlagSpec& spec = add(names, std::move(help), "BYTES", ValueKind::size);
  if (!(value == 0 && bounds.minimum > 0)) spec.default_text = std::to_string(value);
  spec.limits_text =
      fmt::format("{} to {}", format_size_flag(bounds.minimum), format_size_flag(bounds.maximum));
  spec.assign = [&value, bounds](const std::string& text) -> std::string {
    std::optional<std::uint64_t> parsed = parse_size(text);
    if (!parsed) {
      return fmt::format(
          "'{}' is not a size (a whole number of bytes, optionally followed by K, M, G or T: "
          "64K, 1MiB, 2G)",
          text);
    }
    if (*parsed < bounds.minimum || *parsed > bounds.maximum) {
      return out_of_range(text, format_size_flag(bounds.minimum), format_size_flag(bounds.maximum),
                          *parsed < bounds.minimum);
    }
    value = *parsed;
    return {};
  };
  return spec;
}

FlagSpec& FlagSet::duration(const std::string& names, std::chrono::milliseconds& value,
                            std::string help, DurationBounds bounds) {
  FlagSpec& spec = add(names, std::move(help), "DURATION", ValueKind::duration);
  spec.default_text = format_duration_flag(value);
  spec.limits_text = fmt::format("{} to {}", format_duration_flag(bounds.minimum),
                                 format_duration_flag(bounds.maximum));
  spec.assign = [&value, bounds](const std::string& text) -> std::string {
    std::chrono::milliseconds parsed{};
    if (!parse_duration_flag(text, parsed)) {
      return fmt::format(
          "'{}' is not a duration (seconds, or a whole number followed by ms, s, m or h: 500ms, "
          "30s, 5m)",
          text);
    }
    if (parsed < bounds.minimum || parsed > bounds.maximum) {
      return out_of_range(text, format_duration_flag(bounds.minimum),
                          format_duration_flag(bounds.maximum), parsed < bounds.minimum);
    }
    value = parsed;
    return {};
  };
  return spec;
}

FlagSpec& FlagSet::switch_flag(const std::string& names, bool& value, std::string help) {
  FlagSpec& spec = add(names, std::move(help), "", ValueKind::none);
  spec.switch_value = &value;
  return spec;
}

FlagSpec& FlagSet::add_choice(const std::string& names, std::string help, std::string what,
                              std::vector<std::string> words, std::string shown,
                              std::function<void(std::size_t)> store) {
  std::string type_name;
  for (const std::string& word : words)
    type_name += (type_name.empty() ? "" : "|") + word;
  FlagSpec& spec = add(names, std::move(help), type_name, ValueKind::choice);
  spec.default_text = std::move(shown);
  spec.choices = words;
  spec.assign = [words = std::move(words), store = std::move(store),
                 what = std::move(what)](const std::string& text) -> std::string {
    for (std::size_t index = 0; index < words.size(); ++index) {
      if (words[index] == text) {
        store(index);
        return {};
      }
    }
    std::string listed;
    for (std::size_t index = 0; index < words.size(); ++index) {
      listed += index == 0 ? "" : (index + 1 == words.size() ? " or " : ", ");
      listed += words[index];
    }
    return fmt::format("'{}' is not {} ({})", text, what, listed);
  };
  return spec;
}

}  // namespace mux
