#include "chat/room_event.hpp"

#include <charconv>

#include "chat/chat_protocol.hpp"

namespace mux::chat {
namespace {

constexpr std::string_view kHeader = "MUXROOM1 ";

void append_field(std::string& out, std::string_view field) {
  out += ' ';
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

// Reads " <len>:<bytes>" at `at`; nullopt when it is not there or too long.
std::optional<std::string_view> read_field(std::string_view payload, std::size_t& at) {
  if (at >= payload.size() || payload[at] != ' ') return std::nullopt;
  ++at;
  std::size_t colon = payload.find(':', at);
  if (colon == std::string_view::npos || colon == at || colon - at > 6) return std::nullopt;
  // One spelling per length (no leading zeros), so a batch has exactly one encoding.
  if (payload[at] == '0' && colon - at > 1) return std::nullopt;
  std::size_t length = 0;
  auto [end, error] = std::from_chars(payload.data() + at, payload.data() + colon, length);
  if (error != std::errc() || end != payload.data() + colon || length > kMaxFieldBytes)
    return std::nullopt;
  at = colon + 1;
  if (payload.size() - at < length) return std::nullopt;
  std::string_view field = payload.substr(at, length);
  at += length;
  return field;
}

bool is_default_name(std::string_view name) {
  constexpr std::string_view kPrefix = "Client ";
  if (name.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view digits = name.substr(kPrefix.size());
  if (digits.empty() || digits.size() > 20 || digits.front() == '0') return false;
  for (char c : digits)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

bool valid_server_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxServerIdBytes) return false;
  for (char c : id) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::uint64_t> default_name_number(std::string_view name) {
  if (!is_default_name(name)) return std::nullopt;
  std::string_view digits = name.substr(std::string_view("Client ").size());
  std::uint64_t number = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return number;
}

bool acceptable_remote_name(std::string_view name) {
  return is_default_name(name) || !nick_problem(name).has_value();
}

void encode_room_event(std::string& out, std::string_view server_id, const RoomEvent& event) {
  if (out.empty()) {
    out += kHeader;
    out += server_id;
    out += '\n';
  }
  out += static_cast<char>(event.kind);
  append_field(out, event.name);
  switch (event.kind) {
    case RoomEventKind::message:
      append_field(out, event.text);
      append_field(out, "");
      break;
    case RoomEventKind::joined:
      append_field(out, "");
      append_field(out, "");
      break;
    case RoomEventKind::left:
      append_field(out, event.text);
      append_field(out, event.too_slow ? "1" : "0");
      break;
    case RoomEventKind::renamed:
      append_field(out, event.text);
      append_field(out, event.reason);
      break;
  }
  out += '\n';
}

void encode_members_version(std::string& out, std::string_view server_id, std::uint64_t version) {
  if (out.empty()) {
    out += kHeader;
    out += server_id;
    out += '\n';
  }
  out += 'v';
  append_field(out, "");
  append_field(out, std::to_string(version));
  append_field(out, "");
  out += '\n';
}

void encode_signature(std::string& out, std::uint64_t sequence, std::string_view tag) {
  out += 's';
  append_field(out, "");
  append_field(out, std::to_string(sequence));
  append_field(out, tag);
  out += '\n';
}

void encode_reclaim(std::string& out, std::string_view server_id, const NickReclaim& reclaim) {
  if (out.empty()) {
    out += kHeader;
    out += server_id;
    out += '\n';
  }
  out += 'k';
  append_field(out, reclaim.nick);
  append_field(out, reclaim.owner);
  append_field(out, reclaim.verifier);
  out += '\n';
}

void encode_ids(std::string& out, std::uint64_t first_id, std::string_view epoch) {
  out += 'i';
  append_field(out, "");
  append_field(out, std::to_string(first_id));
  append_field(out, epoch);
  out += '\n';
}

std::optional<RoomBatch> decode_room_events(std::string_view payload, std::size_t max_text) {
  if (payload.substr(0, kHeader.size()) != kHeader) return std::nullopt;
  std::size_t newline = payload.find('\n');
  if (newline == std::string_view::npos) return std::nullopt;
  RoomBatch batch;
  batch.server_id = std::string(payload.substr(kHeader.size(), newline - kHeader.size()));
  if (!valid_server_id(batch.server_id)) return std::nullopt;
  std::size_t at = newline + 1;
  std::uint64_t messages = 0;  // m lines so far, kept or not: the ids count every one
  std::optional<std::uint64_t> first_id;
  while (at < payload.size()) {
    std::size_t line_start = at;
    char kind = payload[at++];
    // After the signature, only the "i" line the Redis script appends.
    if (batch.sequence && kind != 'i') return std::nullopt;
    auto name = read_field(payload, at);
    if (!name) return std::nullopt;
    auto second = read_field(payload, at);
    if (!second) return std::nullopt;
    auto third = read_field(payload, at);
    if (!third) return std::nullopt;
    if (at >= payload.size() || payload[at] != '\n') return std::nullopt;
    ++at;
    if (kind == 'v') {
      // One spelling per version (no leading zeros), one version per batch.
      std::uint64_t version = 0;
      auto [end, error] = std::from_chars(second->data(), second->data() + second->size(), version);
      if (!name->empty() || !third->empty() || batch.members_version || second->empty() ||
          error != std::errc() || end != second->data() + second->size() ||
          ((*second)[0] == '0' && second->size() > 1))
        return std::nullopt;
      batch.members_version = version;
      continue;
    }
    if (kind == 's') {
      std::uint64_t sequence = 0;
      auto [end, error] =
          std::from_chars(second->data(), second->data() + second->size(), sequence);
      if (!name->empty() || second->empty() || error != std::errc() ||
          end != second->data() + second->size() || (*second)[0] == '0' || third->size() != 32 ||
          third->find_first_not_of("0123456789abcdef") != third->npos)
        return std::nullopt;
      batch.sequence = sequence;
      batch.tag = std::string(*third);
      batch.signed_bytes = line_start;
      continue;
    }
    if (kind == 'i') {
      std::uint64_t first = 0;
      auto [end, error] = std::from_chars(second->data(), second->data() + second->size(), first);
      if (!name->empty() || first_id || second->empty() || error != std::errc() ||
          end != second->data() + second->size() || (*second)[0] == '0' || third->empty() ||
          third->size() > 32 || third->find_first_not_of("0123456789abcdef") != third->npos)
        return std::nullopt;
      first_id = first;
      batch.epoch = std::string(*third);
      continue;
    }
    if (kind == 'k') {
      // Only a nick (a "Client N" is never reclaimed), a server id, and a digest.
      if (is_default_name(*name) || !acceptable_remote_name(*name) || !valid_server_id(*second) ||
          third->size() != kVerifierChars ||
          third->find_first_not_of("0123456789abcdef") != third->npos)
        return std::nullopt;
      batch.reclaims.push_back({std::string(*name), std::string(*second), std::string(*third)});
      continue;
    }
    if (!acceptable_remote_name(*name)) return std::nullopt;
    RoomEvent event;
    event.name = std::string(*name);
    switch (kind) {
      case 'm': {
        if (!third->empty()) return std::nullopt;
        bool cut = second->size() > max_text;
        event.kind = RoomEventKind::message;
        event.id = ++messages;  // its place for now; its id once the "i" line is known
        event.text = sanitize(second->substr(0, max_text), cut);
        if (event.text.empty()) continue;
        break;
      }
      case 'j':
        if (!second->empty() || !third->empty()) return std::nullopt;
        event.kind = RoomEventKind::joined;
        break;
      case 'l':
        if (*third != "0" && *third != "1") return std::nullopt;
        event.kind = RoomEventKind::left;
        event.text = sanitize(second->substr(0, 200), second->size() > 200);
        event.too_slow = *third == "1";
        break;
      case 'r':
        if (!acceptable_remote_name(*second)) return std::nullopt;
        event.kind = RoomEventKind::renamed;
        event.text = std::string(*second);
        event.reason = sanitize(third->substr(0, 200), third->size() > 200);
        break;
      default:
        return std::nullopt;
    }
    batch.events.push_back(std::move(event));
  }
  batch.first_id = first_id;
  for (RoomEvent& event : batch.events) {
    if (event.kind == RoomEventKind::message) event.id = first_id ? *first_id + event.id - 1 : 0;
  }
  return batch;
}

}  // namespace mux::chat
