#include "chat/history_stream.hpp"

#include <fmt/format.h>

#include <charconv>
#include <optional>
#include <string_view>
#include <unordered_set>

#include "chat/chat_protocol.hpp"
#include "chat/room_event.hpp"
#include "chat/room_signer.hpp"
#include "core/redis/redis_link.hpp"

namespace mux::history_stream {
namespace {

// The value of field `name` in an XREVRANGE element [id, [field, value, ...]] (its first, when
// a writer other than kPublishScript repeated it); empty when it is missing.
std::string_view field(const RedisValue& element, std::string_view name) {
  const auto& fields = element.elements[1].elements;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2)
    if (fields[i].text == name) return fields[i + 1].text;
  return {};
}

// One entry out of an XREVRANGE element, when it verifies and is not a copy of one among
// `nonces` (those read before in the same answer).
std::optional<HistoryEntry> entry(const RedisValue& element, RoomSigner& signer,
                                  std::size_t max_line, std::unordered_set<std::string>& nonces) {
  if (element.elements.size() != 2) return std::nullopt;
  std::string_view time = field(element, "t");
  std::string_view name = field(element, "n");
  std::string_view text = field(element, "m");
  if (!signer.history_verified(element.elements[0].text, field(element, "s"), time, name, text,
                               nonces))
    return std::nullopt;
  HistoryEntry entry;
  // Its id: the stream numbers messages "0-ID" (kPublishScript).
  if (std::string_view id = element.elements[0].text; id.starts_with("0-"))
    std::from_chars(id.data() + 2, id.data() + id.size(), entry.id);
  std::from_chars(time.data(), time.data() + time.size(), entry.unix_seconds);
  if (!chat::acceptable_remote_name(name)) return std::nullopt;
  entry.name = std::string(name);
  entry.text = chat::sanitize(text.substr(0, max_line), text.size() > max_line);
  if (entry.text.empty()) return std::nullopt;
  return entry;
}

}  // namespace

std::vector<std::string> newest(const std::string& stream, std::size_t count) {
  return {"XREVRANGE", stream, "+", "-", "COUNT", std::to_string(count)};
}

std::vector<std::string> range(const std::string& stream, std::uint64_t after, std::uint64_t up_to,
                               std::size_t count) {
  return {"XREVRANGE",
          stream,
          fmt::format("0-{}", up_to),
          fmt::format("(0-{}", after),
          "COUNT",
          std::to_string(count)};
}

std::vector<HistoryEntry> entries(const RedisValue& reply, RoomSigner& signer, std::size_t max_line,
                                  bool ids_rising) {
  std::vector<HistoryEntry> out;
  std::unordered_set<std::string> nonces;
  for (auto it = reply.elements.rbegin(); it != reply.elements.rend(); ++it) {
    auto read = entry(*it, signer, max_line, nonces);
    if (!read) continue;
    if (ids_rising && (read->id == 0 || (!out.empty() && read->id <= out.back().id))) continue;
    out.push_back(std::move(*read));
  }
  return out;
}

std::vector<MissedEntry> missed(const RedisValue& reply, RoomSigner& signer, std::size_t max_line,
                                std::string_view self) {
  std::vector<MissedEntry> out;
  std::unordered_set<std::string> nonces;
  for (auto it = reply.elements.rbegin(); it != reply.elements.rend(); ++it) {
    auto read = entry(*it, signer, max_line, nonces);
    if (!read) continue;
    if (read->id == 0 || (!out.empty() && read->id <= out.back().entry.id)) continue;
    // (Unsigned: a Redis writer could mark a line as ours, and our clients would not get it
    // again; it could delete it as well.)
    out.push_back({std::move(*read), field(*it, "o") == self});
  }
  return out;
}

}  // namespace mux::history_stream
