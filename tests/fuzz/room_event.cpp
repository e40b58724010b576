// The shared-room wire format (MUXROOM1, chat/room_event.hpp): what one chat-server reads from
// another through Redis, so every byte may come from a hostile or broken peer.
//  - decode_room_events against a reference reader of the documented grammar (canonical lengths,
//    unused fields empty, names checked, texts sanitized and cut), which also keeps each event's
//    raw fields: re-encoding an accepted batch gives the input back byte for byte when nothing
//    was sanitized, cut or dropped, and decodes to the same batch in every case;
//  - no decoded field is longer than its limit;
//  - events generated from the input round-trip through encode and decode unchanged, every
//    truncation of their encoding that is not at an event boundary is refused, and one malformed
//    event appended refuses the whole batch.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "chat/chat_protocol.hpp"
#include "chat/room_event.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"

namespace mux::fuzz::room_event {
namespace {

using chat::RoomBatch;
using chat::RoomEvent;
using chat::RoomEventKind;

constexpr std::size_t kMaxReasonBytes = 200;  // the left and rename reasons, as documented

bool same_event(const RoomEvent& a, const RoomEvent& b) {
  return a.kind == b.kind && a.name == b.name && a.text == b.text && a.reason == b.reason &&
         a.too_slow == b.too_slow;
}

// `ids`: the messages' ids too (a re-encoding leaves out dropped messages, which shifts them).
bool same_batch(const RoomBatch& a, const RoomBatch& b, bool ids = true) {
  auto same_reclaim = [](const chat::NickReclaim& x, const chat::NickReclaim& y) {
    return x.nick == y.nick && x.owner == y.owner && x.verifier == y.verifier;
  };
  return a.server_id == b.server_id && a.members_version == b.members_version &&
         std::equal(a.reclaims.begin(), a.reclaims.end(), b.reclaims.begin(), b.reclaims.end(),
                    same_reclaim) &&
         a.epoch == b.epoch && a.first_id == b.first_id && a.events.size() == b.events.size() &&
         std::equal(a.events.begin(), a.events.end(), b.events.begin(),
                    [ids](const RoomEvent& x, const RoomEvent& y) {
                      return same_event(x, y) && (!ids || x.id == y.id);
                    });
}

std::string describe(const RoomEvent& event) {
  return fmt::format("{} {} {} {} {}", static_cast<char>(event.kind), printable(event.name),
                     printable(event.text), printable(event.reason), event.too_slow);
}

struct ReferenceEvent {
  char kind = 0;
  std::string fields[3];
};

struct Reference {
  RoomBatch batch;
  std::vector<ReferenceEvent> raw;  // every event read, dropped ones included
  bool unchanged = true;            // every decoded field equals its raw field
};

// A cursor over the payload; each read either consumes what the grammar asks or fails.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  [[nodiscard]] bool done() const { return at_ == text_.size(); }
  bool literal(char c) {
    if (done() || text_[at_] != c) return false;
    ++at_;
    return true;
  }
  std::optional<char> any() {
    if (done()) return std::nullopt;
    return text_[at_++];
  }
  // Decimal, canonical ("0" or no leading zero), at most kMaxFieldBytes.
  std::optional<std::size_t> length() {
    std::string digits;
    while (!done() && text_[at_] >= '0' && text_[at_] <= '9' && digits.size() < 7)
      digits += text_[at_++];
    if (digits.empty() || digits.size() > 6 || (digits[0] == '0' && digits.size() > 1))
      return std::nullopt;
    std::size_t value = std::stoul(digits);
    if (value > chat::kMaxFieldBytes) return std::nullopt;
    return value;
  }
  std::optional<std::string> bytes(std::size_t count) {
    if (text_.size() - at_ < count) return std::nullopt;
    std::string taken(text_.substr(at_, count));
    at_ += count;
    return taken;
  }

 private:
  std::string_view text_;
  std::size_t at_ = 0;
};

bool server_id_char(char c) {
  return std::string_view("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-")
             .find(c) != std::string_view::npos;
}

bool default_name(std::string_view name) {
  if (name.size() < 8 || name.size() > 27 || name.substr(0, 7) != "Client ") return false;
  std::string_view number = name.substr(7);
  return number[0] != '0' &&
         std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool acceptable_name(std::string_view name) {
  return default_name(name) || !chat::nick_problem(name).has_value();
}

std::string sanitize_cut(std::string_view raw, std::size_t limit) {
  return chat::sanitize(raw.substr(0, limit), raw.size() > limit);
}

std::optional<Reference> reference_decode(std::string_view payload, std::size_t max_text) {
  Cursor cursor(payload);
  for (char c : std::string_view("MUXROOM1 "))
    if (!cursor.literal(c)) return std::nullopt;
  Reference reference;
  while (!cursor.literal('\n')) {
    std::optional<char> c = cursor.any();
    if (!c || !server_id_char(*c) || reference.batch.server_id.size() == chat::kMaxServerIdBytes)
      return std::nullopt;
    reference.batch.server_id += *c;
  }
  if (reference.batch.server_id.empty()) return std::nullopt;
  std::uint64_t messages = 0;
  bool signed_batch = false;  // an s line was read: only an i line may follow
  while (!cursor.done()) {
    ReferenceEvent raw;
    raw.kind = *cursor.any();
    if (signed_batch && raw.kind != 'i') return std::nullopt;
    for (std::string& field : raw.fields) {
      std::optional<std::size_t> length;
      std::optional<std::string> bytes;
      if (!cursor.literal(' ') || !(length = cursor.length()) || !cursor.literal(':') ||
          !(bytes = cursor.bytes(*length)))
        return std::nullopt;
      field = *bytes;
    }
    if (!cursor.literal('\n')) return std::nullopt;
    if (raw.kind == 'v') {
      const std::string& digits = raw.fields[1];
      if (!raw.fields[0].empty() || !raw.fields[2].empty() || reference.batch.members_version ||
          digits.empty() || digits.size() > 20 || (digits[0] == '0' && digits.size() > 1) ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
      // 20 digits may still be above 2^64 - 1.
      if (digits.size() == 20 && digits > "18446744073709551615") return std::nullopt;
      reference.batch.members_version = std::stoull(digits);
      reference.raw.push_back(raw);
      continue;
    }
    if (raw.kind == 'i') {
      const std::string& digits = raw.fields[1];
      const std::string& epoch = raw.fields[2];
      if (!raw.fields[0].empty() || reference.batch.first_id || digits.empty() ||
          digits.size() > 20 || digits[0] == '0' ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          epoch.empty() || epoch.size() > 32 ||
          !std::all_of(epoch.begin(), epoch.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
        return std::nullopt;
      if (digits.size() == 20 && digits > "18446744073709551615") return std::nullopt;
      reference.batch.first_id = std::stoull(digits);
      reference.batch.epoch = epoch;
      reference.unchanged = false;  // encode() writes it after the version: maybe reordered
      reference.raw.push_back(raw);
      continue;
    }
    if (raw.kind == 's') {
      // --room-secret-file: a sequence number (no leading zero, not 0) and a 128-bit tag in
      // lowercase hex; the decoder only parses it (the bus verifies it).
      const std::string& digits = raw.fields[1];
      const std::string& tag = raw.fields[2];
      if (!raw.fields[0].empty() || digits.empty() || digits.size() > 20 || digits[0] == '0' ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          tag.size() != 32 || !std::all_of(tag.begin(), tag.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
          }))
        return std::nullopt;
      if (digits.size() == 20 && digits > "18446744073709551615") return std::nullopt;
      signed_batch = true;
      reference.unchanged = false;  // encode() does not write it
      reference.raw.push_back(raw);
      continue;
    }
    if (raw.kind == 'k') {
      // A nick (never "Client N"), a server id, a SHA-256 in lowercase hex.
      const std::string& owner = raw.fields[1];
      const std::string& verifier = raw.fields[2];
      if (default_name(raw.fields[0]) || !acceptable_name(raw.fields[0]) || owner.empty() ||
          owner.size() > chat::kMaxServerIdBytes ||
          !std::all_of(owner.begin(), owner.end(), server_id_char) || verifier.size() != 64 ||
          !std::all_of(verifier.begin(), verifier.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
        return std::nullopt;
      reference.batch.reclaims.push_back({raw.fields[0], owner, verifier});
      reference.unchanged = false;  // encode() writes them after the events: maybe reordered
      reference.raw.push_back(raw);
      continue;
    }
    if (!acceptable_name(raw.fields[0])) return std::nullopt;
    // encode() writes the version last: an event after it re-encodes in another order.
    if (reference.batch.members_version) reference.unchanged = false;
    RoomEvent event;
    event.name = raw.fields[0];
    switch (raw.kind) {
      case 'm':
        if (!raw.fields[2].empty()) return std::nullopt;
        event.kind = RoomEventKind::message;
        event.id = ++messages;  // its place among every m event; its id once the i line is read
        event.text = sanitize_cut(raw.fields[1], max_text);
        reference.unchanged &= event.text == raw.fields[1];
        break;
      case 'j':
        if (!raw.fields[1].empty() || !raw.fields[2].empty()) return std::nullopt;
        event.kind = RoomEventKind::joined;
        break;
      case 'l':
        if (raw.fields[2] != "0" && raw.fields[2] != "1") return std::nullopt;
        event.kind = RoomEventKind::left;
        event.text = sanitize_cut(raw.fields[1], kMaxReasonBytes);
        event.too_slow = raw.fields[2] == "1";
        reference.unchanged &= event.text == raw.fields[1];
        break;
      case 'r':
        if (!acceptable_name(raw.fields[1])) return std::nullopt;
        event.kind = RoomEventKind::renamed;
        event.text = raw.fields[1];
        event.reason = sanitize_cut(raw.fields[2], kMaxReasonBytes);
        reference.unchanged &= event.reason == raw.fields[2];
        break;
      default:
        return std::nullopt;
    }
    reference.raw.push_back(raw);
    if (event.kind == RoomEventKind::message && event.text.empty()) {
      reference.unchanged = false;  // an empty message is dropped, not relayed
      continue;
    }
    reference.batch.events.push_back(event);
  }
  for (RoomEvent& event : reference.batch.events) {
    if (event.kind == RoomEventKind::message)
      event.id = reference.batch.first_id ? *reference.batch.first_id + event.id - 1 : 0;
  }
  return reference;
}

std::string encode(const RoomBatch& batch) {
  std::string wire;
  for (const RoomEvent& event : batch.events)
    chat::encode_room_event(wire, batch.server_id, event);
  for (const chat::NickReclaim& reclaim : batch.reclaims)
    chat::encode_reclaim(wire, batch.server_id, reclaim);
  if (batch.members_version)
    chat::encode_members_version(wire, batch.server_id, *batch.members_version);
  if (batch.first_id && !wire.empty()) chat::encode_ids(wire, *batch.first_id, batch.epoch);
  return wire;
}

// Limits: names are nicks (at most 32 characters of at most 4 bytes) or "Client N"; texts are
// what the sanitizer makes of at most max_text (or 200) bytes, each byte becoming at most 3.
void check_limits(const RoomBatch& batch, std::size_t max_text) {
  FUZZ_CHECK(chat::valid_server_id(batch.server_id), printable(batch.server_id));
  for (const RoomEvent& event : batch.events) {
    FUZZ_CHECK(chat::acceptable_remote_name(event.name) && event.name.size() <= 4 * 32,
               describe(event));
    FUZZ_CHECK(is_valid_utf8(event.text) && is_valid_utf8(event.reason), describe(event));
    std::size_t text_limit = event.kind == RoomEventKind::message ? max_text : kMaxReasonBytes;
    if (event.kind == RoomEventKind::renamed) {
      FUZZ_CHECK(chat::acceptable_remote_name(event.text), describe(event));
      FUZZ_CHECK(event.reason.size() <= 3 * kMaxReasonBytes, describe(event));
    } else {
      FUZZ_CHECK(event.text.size() <= 3 * text_limit, describe(event));
      FUZZ_CHECK(event.reason.empty(), describe(event));
    }
    FUZZ_CHECK(!event.too_slow || event.kind == RoomEventKind::left, describe(event));
    FUZZ_CHECK(event.kind != RoomEventKind::message || !event.text.empty(), describe(event));
  }
}

void check_decoded(std::string_view payload, std::size_t max_text) {
  std::optional<RoomBatch> decoded = chat::decode_room_events(payload, max_text);
  std::optional<Reference> reference = reference_decode(payload, max_text);
  FUZZ_CHECK(decoded.has_value() == reference.has_value(),
             fmt::format("{}: decode {} but the reference {}", printable(payload),
                         decoded ? "accepts" : "refuses", reference ? "accepts" : "refuses"));
  if (!decoded) return;
  FUZZ_CHECK(same_batch(*decoded, reference->batch),
             fmt::format("{}: decoded differently from the reference", printable(payload)));
  check_limits(*decoded, max_text);

  // Re-encoding: the same bytes when nothing was changed on the way in, and always a payload
  // that decodes to the same batch (with room for what the sanitizer made longer).
  std::string again = encode(*decoded);
  if (reference->unchanged && !decoded->events.empty())
    FUZZ_CHECK(again == payload,
               fmt::format("{} re-encoded as {}", printable(payload), printable(again)));
  // A reason the sanitizer made longer than 200 bytes would be cut again; messages have room.
  bool reasons_fit =
      std::all_of(decoded->events.begin(), decoded->events.end(), [](const RoomEvent& e) {
        return (e.kind != RoomEventKind::left || e.text.size() <= kMaxReasonBytes) &&
               e.reason.size() <= kMaxReasonBytes;
      });
  if (!decoded->events.empty() && reasons_fit) {
    std::optional<RoomBatch> twice = chat::decode_room_events(again, 3 * max_text);
    FUZZ_CHECK(twice && same_batch(*twice, *decoded, false),
               fmt::format("{} re-encoded as {}, which decodes differently", printable(payload),
                           printable(again)));
  }
}

// A name from the input: a nick when the bytes make one, otherwise "Client N".
std::string generated_name(InputReader& input) {
  std::uint8_t choice = input.take_byte();
  if (choice < 64) return fmt::format("Client {}", 1 + choice * 997u + input.take_byte());
  std::string nick(input.take(choice % 40));
  return acceptable_name(nick) && !nick.empty() ? nick : fmt::format("Client {}", choice);
}

// Sanitized text from the input that is at most `limit` bytes after sanitizing.
std::string generated_text(InputReader& input, std::size_t limit) {
  std::string_view raw = input.take(input.take_byte() % (limit + 1));
  std::string text = chat::sanitize(raw);
  while (text.size() > limit) {
    raw.remove_suffix(1);
    text = chat::sanitize(raw, true);
  }
  return text;
}

RoomBatch generated_batch(InputReader& input, std::size_t max_text) {
  RoomBatch batch;
  std::string_view id_bytes = input.take(1 + input.take_byte() % chat::kMaxServerIdBytes);
  for (char c : id_bytes)
    batch.server_id += server_id_char(c) ? c : '-';
  if (batch.server_id.empty()) batch.server_id = "s";
  for (int count = 0; count < 12 && !input.empty(); ++count) {
    RoomEvent event;
    std::uint8_t kind = input.take_byte();
    event.name = generated_name(input);
    switch (kind % 4) {
      case 0:
        event.kind = RoomEventKind::message;
        event.text = generated_text(input, max_text);
        if (event.text.empty()) event.text = "-";
        break;
      case 1:
        event.kind = RoomEventKind::joined;
        break;
      case 2:
        event.kind = RoomEventKind::left;
        event.text = generated_text(input, kMaxReasonBytes);
        event.too_slow = (kind & 4) != 0;
        break;
      default:
        event.kind = RoomEventKind::renamed;
        event.text = generated_name(input);
        event.reason = generated_text(input, kMaxReasonBytes);
        break;
    }
    batch.events.push_back(std::move(event));
  }
  return batch;
}

void check_generated(InputReader& input, std::size_t max_text) {
  RoomBatch batch = generated_batch(input, max_text);
  if (batch.events.empty()) return;
  std::string wire;
  std::set<std::size_t> boundaries;  // where a prefix is a whole batch
  for (const RoomEvent& event : batch.events) {
    chat::encode_room_event(wire, batch.server_id, event);
    if (boundaries.empty()) boundaries.insert(9 + batch.server_id.size() + 1);  // the header
    boundaries.insert(wire.size());
  }
  std::optional<RoomBatch> decoded = chat::decode_room_events(wire, max_text);
  FUZZ_CHECK(decoded && same_batch(*decoded, batch),
             fmt::format("{} does not decode to the events it was made from", printable(wire)));
  check_decoded(wire, max_text);

  // Truncated anywhere but at an event boundary: refused whole. Every cut point in the first
  // 48 bytes (the header and the first event's fields), both sides of every boundary, and a
  // spread of 16 more (each cut decodes the whole prefix: more would slow the fuzzer tenfold).
  std::set<std::size_t> cuts;
  for (std::size_t cut = 0; cut < std::min<std::size_t>(48, wire.size()); ++cut)
    cuts.insert(cut);
  std::size_t step = std::max<std::size_t>(1, wire.size() / 16);
  for (std::size_t cut = 0; cut < wire.size(); cut += step)
    cuts.insert(cut);
  for (std::size_t boundary : boundaries) {
    cuts.insert(boundary - 1);
    if (boundary < wire.size()) cuts.insert(boundary + 1);
  }
  for (std::size_t cut : cuts) {
    if (cut >= wire.size()) continue;
    bool accepted =
        chat::decode_room_events(std::string_view(wire).substr(0, cut), max_text).has_value();
    FUZZ_CHECK(accepted == (boundaries.count(cut) != 0),
               fmt::format("{} cut at {} of {}: {}", printable(wire), cut, wire.size(),
                           accepted ? "accepted" : "refused"));
  }
  // One bad event spoils the batch.
  for (std::string_view bad : {"x 0: 0: 0:\n", "m 3:eve 2:hi 0:", "j 3:eve 0: 0:\r\n",
                               "l 3:eve 0: 1:2\n", "m 3:eve 01:x 0:\n", "j 0: 0: 0:\n"}) {
    std::string spoiled = wire + std::string(bad);
    FUZZ_CHECK(!chat::decode_room_events(spoiled, max_text), printable(spoiled));
  }
}

}  // namespace

// The first byte chooses max_text (1 to 1021 bytes); the rest is a payload to decode, and also
// the bytes the generated events are made from.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  std::size_t max_text = 1 + 4u * input.take_byte();
  InputReader payload_reader = input;
  check_decoded(payload_reader.take_rest(), max_text);
  check_generated(input, max_text);
}

}  // namespace mux::fuzz::room_event
