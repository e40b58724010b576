#include "chat/name_set.hpp"

#include <charconv>

namespace mux::chat {

std::optional<std::uint64_t> NameSet::number_of(std::string_view name) {
  constexpr std::string_view kPrefix = "Client ";
  if (!name.starts_with(kPrefix)) return std::nullopt;
  std::string_view digits = name.substr(kPrefix.size());
  // Exactly what fmt prints: no sign, no leading zero, nothing after the digits.
  if (digits.empty() || (digits[0] == '0' && digits.size() > 1) || digits[0] < '0' ||
      digits[0] > '9')
    return std::nullopt;
  std::uint64_t number = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return number;
}

bool NameSet::insert(std::string_view name) {
  bool added = false;
  if (auto number = number_of(name)) {
    std::uint64_t& bits = numbered_[*number / 64];
    std::uint64_t bit = std::uint64_t{1} << (*number % 64);
    added = (bits & bit) == 0;
    bits |= bit;
  } else {
    added = other_.emplace(name).second;
  }
  if (added) ++size_;
  return added;
}

bool NameSet::erase(std::string_view name) {
  bool erased = false;
  if (auto number = number_of(name)) {
    auto it = numbered_.find(*number / 64);
    std::uint64_t bit = std::uint64_t{1} << (*number % 64);
    if (it != numbered_.end() && (it->second & bit) != 0) {
      erased = true;
      it->second &= ~bit;
      if (it->second == 0) numbered_.erase(it);
    }
  } else {
    erased = other_.erase(std::string(name)) != 0;
  }
  if (erased) --size_;
  return erased;
}

bool NameSet::contains(std::string_view name) const {
  if (auto number = number_of(name)) {
    auto it = numbered_.find(*number / 64);
    return it != numbered_.end() && (it->second >> (*number % 64) & 1U) != 0;
  }
  return other_.contains(std::string(name));
}

void NameSet::clear() noexcept {
  // Their memory back too: a mirror is cleared to be rebuilt from a snapshot.
  std::unordered_map<std::uint64_t, std::uint64_t>().swap(numbered_);
  std::unordered_set<std::string>().swap(other_);
  size_ = 0;
}

}  // namespace mux::chat
