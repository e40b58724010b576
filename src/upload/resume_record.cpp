#include "upload/resume_record.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include <array>
#include <charconv>
#include <vector>

#include "upload/content_hash.hpp"
#include "upload/upload_protocol.hpp"

namespace mux {
namespace {

constexpr std::string_view kMagic = "MUXRESUME 1\n";

// A checkpoint every MiB encodes the ~600-byte hash state: a table, not a format call per byte
// (which cost more than the record's write).
std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text(bytes.size() * 2, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    auto byte = static_cast<unsigned char>(bytes[i]);
    text[2 * i] = kDigits[byte >> 4];
    text[2 * i + 1] = kDigits[byte & 0x0f];
  }
  return text;
}

std::optional<std::string> from_hex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  std::string bytes(text.size() / 2, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    unsigned value = 0;
    auto [end, error] = std::from_chars(text.data() + 2 * i, text.data() + 2 * i + 2, value, 16);
    if (error != std::errc() || end != text.data() + 2 * i + 2) return std::nullopt;
    bytes[i] = static_cast<char>(value);
  }
  return bytes;
}

std::optional<std::uint64_t> to_number(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string checksum(std::string_view body) {
  ContentHash hash;
  hash.update(body.data(), body.size());
  return hash.hex();
}

// The value of line `key=` at the front of `text`, which moves past it.
std::optional<std::string_view> take_line(std::string_view& text, std::string_view key) {
  std::size_t newline = text.find('\n');
  if (newline == std::string_view::npos) return std::nullopt;
  std::string_view line = text.substr(0, newline);
  text.remove_prefix(newline + 1);
  if (!line.starts_with(key) || line.size() <= key.size() || line[key.size()] != '=') {
    return std::nullopt;
  }
  return line.substr(key.size() + 1);  // may be empty (no token)
}

}  // namespace

std::string encode_resume_record(const ResumeRecord& record) {
  std::string body = fmt::format("{}size={}\nname={}\nkey={}\ntoken={}\noffset={}\nstate={}\n",
                                 kMagic, record.size, percent_encode(record.name), record.key_hash,
                                 record.token_hash, record.offset, to_hex(record.hash_state));
  if (!record.saved_as.empty()) body += fmt::format("saved={}\n", percent_encode(record.saved_as));
  return fmt::format("{}check={}\n", body, checksum(body));
}

std::optional<ResumeRecord> decode_resume_record(std::string_view text) {
  if (!text.starts_with(kMagic)) return std::nullopt;
  std::size_t check = text.find("\ncheck=");
  if (check == std::string_view::npos) return std::nullopt;
  std::string_view body = text.substr(0, check + 1);
  std::string_view rest = text.substr(check + 1);
  std::optional<std::string_view> sum = take_line(rest, "check");
  // Bytes after the record are a longer, older record's tail: ignored.
  if (!sum || *sum != checksum(body)) return std::nullopt;
  body.remove_prefix(kMagic.size());
  auto size = take_line(body, "size");
  auto name = take_line(body, "name");
  auto key = take_line(body, "key");
  auto token = take_line(body, "token");
  auto offset = take_line(body, "offset");
  auto state = take_line(body, "state");
  std::optional<std::string_view> saved;
  if (!body.empty()) {  // a completed upload's only
    saved = take_line(body, "saved");
    if (!saved) return std::nullopt;
  }
  if (!size || !name || !key || !token || !offset || !state || !body.empty()) return std::nullopt;
  ResumeRecord record;
  std::optional<std::uint64_t> size_value = to_number(*size);
  std::optional<std::uint64_t> offset_value = to_number(*offset);
  std::optional<std::string> state_bytes = from_hex(*state);
  if (!size_value || !offset_value || !state_bytes || *offset_value > *size_value) {
    return std::nullopt;
  }
  record.size = *size_value;
  record.name = percent_decode(*name);
  record.key_hash = std::string(*key);
  record.token_hash = std::string(*token);
  record.offset = *offset_value;
  record.hash_state = std::move(*state_bytes);
  if (saved) {
    record.saved_as = percent_decode(*saved);
    if (record.saved_as.empty() || record.offset != record.size) return std::nullopt;
  }
  return record;
}

}  // namespace mux
