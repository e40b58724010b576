#include "chat/room_roster.hpp"

#include <algorithm>
#include <cctype>

namespace mux::chat {
namespace {

bool starts_with_folded(std::string_view text, std::string_view prefix) {
  if (prefix.size() > text.size()) return false;
  return std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
}

// `text` with `start` and `end` cut off, or empty when it does not have both.
std::string_view between(std::string_view text, std::string_view start, std::string_view end) {
  if (text.size() <= start.size() + end.size() || !text.starts_with(start) || !text.ends_with(end))
    return {};
  return text.substr(start.size(), text.size() - start.size() - end.size());
}

}  // namespace

void RoomRoster::observe(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // The forms are chat::notice's; a relay "[NAME]: text" shows NAME is here too.
  if (line.starts_with("[")) {
    std::size_t end = line.find("]: ");
    if (end != std::string_view::npos && end > 1) remember(line.substr(1, end - 1));
    return;
  }
  if (!line.starts_with("* ")) return;
  if (std::string_view own = between(line, "* welcome, you are ", " (type /help for commands)");
      !own.empty()) {
    own_nick_ = own;
    remember(own);
    return;
  }
  if (line.starts_with("* online (")) {
    std::size_t list = line.find("): ");
    if (list == std::string_view::npos) return;
    // A big room's answer names only the first members ("* online (N, first 100 shown; ...)"):
    // it adds to what is known instead of replacing it.
    if (line.substr(0, list).find(" shown") == std::string_view::npos) {
      nicks_.clear();
      by_age_.clear();
    }
    std::string_view names = line.substr(list + 3);
    while (!names.empty()) {
      std::size_t comma = names.find(", ");
      remember(names.substr(0, comma));
      if (comma == std::string_view::npos) break;
      names.remove_prefix(comma + 2);
    }
    if (!own_nick_.empty()) remember(own_nick_);
    return;
  }
  if (std::string_view name = between(line, "* ", " joined"); !name.empty()) {
    remember(name);
  } else if (std::string_view gone = between(line, "* ", " left"); !gone.empty()) {
    forget(gone);
  } else if (std::string_view slow = between(line, "* ", " left (too slow)"); !slow.empty()) {
    forget(slow);
  } else if (std::size_t is_now = line.find(" is now "); is_now != std::string_view::npos) {
    rename(line.substr(2, is_now - 2), line.substr(is_now + 8));
  }
}

void RoomRoster::rename(std::string_view from, std::string_view to) {
  if (from.empty() || to.empty()) return;
  forget(from);
  remember(to);
  if (from == own_nick_) own_nick_ = to;
}

void RoomRoster::remember(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return;
  auto [it, added] = nicks_.try_emplace(std::string(name), 0);
  if (!added) by_age_.erase(it->second);
  it->second = ++seen_clock_;
  by_age_.emplace(it->second, it->first);
  while (nicks_.size() > kMaxNames) {
    auto oldest = by_age_.begin();
    nicks_.erase(nicks_.find(oldest->second));
    by_age_.erase(oldest);
  }
}

void RoomRoster::forget(std::string_view name) {
  auto it = nicks_.find(name);
  if (it == nicks_.end()) return;
  by_age_.erase(it->second);
  nicks_.erase(it);
}

std::vector<std::string> RoomRoster::nicks() const {
  std::vector<std::string> names;
  names.reserve(nicks_.size());
  for (const auto& [name, seen] : nicks_)
    names.push_back(name);
  return names;
}

Completion RoomRoster::complete(std::string_view before_cursor) const {
  // The fragment starts at the line's start or after a space, as early as still matches:
  // nicks may hold spaces ("Client 2").
  for (std::size_t start = 0; start < before_cursor.size();) {
    std::string_view fragment = before_cursor.substr(start);
    std::vector<std::string> matches;
    for (const auto& [nick, seen] : nicks_) {
      if (nick != own_nick_ && starts_with_folded(nick, fragment)) matches.push_back(nick);
    }
    if (!matches.empty()) {
      Completion completion;
      if (matches.size() == 1) {
        completion.replace_bytes = fragment.size();
        completion.insert = matches.front() + (start == 0 ? ": " : " ");
        return completion;
      }
      std::size_t common = matches.front().size();
      for (const std::string& match : matches) {
        std::size_t same = 0;
        while (same < common && same < match.size() &&
               std::tolower(static_cast<unsigned char>(match[same])) ==
                   std::tolower(static_cast<unsigned char>(matches.front()[same])))
          ++same;
        common = same;
      }
      // Never cut a UTF-8 character in two.
      while (common > fragment.size() &&
             (static_cast<unsigned char>(matches.front()[common]) & 0xC0) == 0x80)
        --common;
      if (common > fragment.size()) {
        completion.replace_bytes = fragment.size();
        completion.insert = matches.front().substr(0, common);
      } else {
        completion.choices = std::move(matches);
      }
      return completion;
    }
    std::size_t space = before_cursor.find(' ', start);
    if (space == std::string_view::npos) break;
    start = space + 1;
  }
  return {};
}

}  // namespace mux::chat
