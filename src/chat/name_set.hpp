// NameSet: a set of member names, as a Redis room's server mirrors another server's members.
// Compact for the names most members have: a default name ("Client N", the exact text the room
// gives) is one bit in a 64-bit word keyed by N / 64, and numbers come in blocks per server, so a
// server's default names are dense runs. Any other name is a string in a hash set. At 100,000
// clients on 7 servers each server mirrors ~86,000 remote names: as strings in an
// unordered_set they cost ~75 bytes each (issue 25), here ~1 when the numbers are dense and ~40
// when every number is alone in its word.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

namespace mux::chat {

class NameSet {
 public:
  // True when the name was not there before.
  bool insert(std::string_view name);
  // True when the name was there.
  bool erase(std::string_view name);
  [[nodiscard]] bool contains(std::string_view name) const;
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  void clear() noexcept;

  // Calls `visit(std::string_view)` once for every name, in no particular order; the view is
  // only valid during the call.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    fmt::memory_buffer text;
    for (const auto& [word, bits] : numbered_) {
      for (unsigned bit = 0; bit < 64; ++bit) {
        if ((bits >> bit & 1U) == 0) continue;
        text.clear();
        fmt::format_to(std::back_inserter(text), "Client {}", word * 64 + bit);
        visit(std::string_view(text.data(), text.size()));
      }
    }
    for (const std::string& name : other_)
      visit(std::string_view(name));
  }

 private:
  // N when `name` is exactly the room's default name for N ("Client 7", never "Client 07").
  [[nodiscard]] static std::optional<std::uint64_t> number_of(std::string_view name);

  std::unordered_map<std::uint64_t, std::uint64_t> numbered_;  // N / 64 -> bit N % 64
  std::unordered_set<std::string> other_;
  std::size_t size_ = 0;
};

}  // namespace mux::chat
