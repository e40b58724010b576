#include "upload/upload_protocol.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "core/base/sanitize.hpp"

namespace mux {
namespace {

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  // No cap on the digit count: leading zeros are still a number ("007"), and the overflow check
  // below refuses anything above 2^64-1 (the header line itself is bounded).
  if (text.empty()) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool is_control(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte < 0x20 || byte == 0x7f;
}

bool is_utf8_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

HeaderParse header_error(std::string reason) {
  return HeaderParse{std::nullopt, std::move(reason)};
}

const std::string* find_field(const ProtocolFields& fields, std::string_view key) {
  for (const auto& [field_key, value] : fields) {
    if (field_key == key) return &value;
  }
  return nullptr;
}

// Splits `rest` (the text after a header's name or a reply's hash, each field preceded by one
// space) into `fields`. Returns an empty string, or why it is not a list of fields: a field
// without '=', with an empty key, or a key given twice. Positions, not the text: the fields are
// peer-controlled and the reason reaches a log line.
std::string parse_fields(std::string_view rest, ProtocolFields& fields) {
  std::size_t position = 0;
  while (!rest.empty()) {
    if (rest.front() != ' ') return fmt::format("field {} is not key=value", position + 1);
    rest.remove_prefix(1);
    ++position;
    std::size_t space = rest.find(' ');
    std::string_view field = rest.substr(0, space);
    rest.remove_prefix(field.size());
    std::size_t equals = field.find('=');
    if (equals == std::string_view::npos || equals == 0) {
      return fmt::format("field {} is not key=value", position);
    }
    std::string_view key = field.substr(0, equals);
    if (find_field(fields, key) != nullptr) return fmt::format("field {} repeats a key", position);
    fields.emplace_back(std::string(key), std::string(field.substr(equals + 1)));
  }
  return {};
}

}  // namespace

const std::string* UploadHeader::field(std::string_view key) const {
  return find_field(fields, key);
}

HeaderParse parse_header_line(std::string_view line) {
  if (line.substr(0, kUploadMagic.size()) != kUploadMagic) {
    return header_error("does not start with MUXUP/1");
  }
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::string_view rest = line.substr(kUploadMagic.size());
  std::size_t space = rest.find(' ');
  std::string_view size_text = rest.substr(0, space);
  if (size_text.empty()) return header_error("missing size");
  UploadHeader header;
  if (size_text != "-") {
    header.size = parse_decimal(size_text);
    if (!header.size) return header_error("size is not a number");
  }
  if (space == std::string_view::npos) return header_error("missing name");
  rest.remove_prefix(space + 1);
  space = rest.find(' ');
  header.name = percent_decode(rest.substr(0, space));
  rest.remove_prefix(space == std::string_view::npos ? rest.size() : space);
  if (std::string error = parse_fields(rest, header.fields); !error.empty()) {
    return header_error(std::move(error));
  }
  return HeaderParse{std::move(header), {}};
}

static bool is_lower_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool valid_upload_key(std::string_view key) {
  return key.size() == kUploadKeyLength && is_lower_hex(key);
}

std::string format_resume_offer(std::uint64_t offset, std::string_view prefix_hash) {
  return fmt::format("RESUME {} {}\n", offset, prefix_hash);
}

std::optional<ResumeOffer> parse_resume_offer(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.starts_with("RESUME ")) return std::nullopt;
  line.remove_prefix(7);
  std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  std::optional<std::uint64_t> offset = parse_decimal(line.substr(0, space));
  std::string_view hash = line.substr(space + 1);
  if (!offset || hash.size() != 32 || !is_lower_hex(hash)) return std::nullopt;
  return ResumeOffer{*offset, std::string(hash)};
}

std::string format_ack(std::uint64_t offset) {
  return fmt::format("ACK {}\n", offset);
}

std::optional<std::uint64_t> parse_ack(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.starts_with("ACK ")) return std::nullopt;
  return parse_decimal(line.substr(4));
}

std::string format_resume_from(std::uint64_t offset) {
  return fmt::format("FROM {}\n", offset);
}

std::optional<std::uint64_t> parse_resume_from(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (!line.starts_with("FROM ")) return std::nullopt;
  return parse_decimal(line.substr(5));
}

bool asks_resume_offer(const UploadHeader& header) {
  const std::string* ask = header.field(kResumeAskField);
  return header.size && header.field(kResumeField) != nullptr && ask != nullptr && *ask == "1";
}

std::string format_header_line(std::optional<std::uint64_t> size, std::string_view name,
                               std::string_view token, bool want_saved_name,
                               std::string_view resume_key, bool ask_offset, bool want_acks,
                               bool confirm) {
  std::string size_text = size ? std::to_string(*size) : std::string("-");
  std::string fields = token.empty() ? std::string() : fmt::format(" token={}", token);
  if (want_saved_name) fields += fmt::format(" {}=1", kReplyNameField);
  if (size && !resume_key.empty()) {
    fields += fmt::format(" {}={}", kResumeField, resume_key);
    if (ask_offset) fields += fmt::format(" {}=1", kResumeAskField);
    if (confirm) fields += fmt::format(" {}=1", kConfirmField);
  }
  if (want_acks) fields += fmt::format(" {}=1", kAckField);
  return fmt::format("{}{} {}{}\n", kUploadMagic, size_text, percent_encode(name), fields);
}

std::string check_relative_path(std::string_view path) {
  if (path.empty()) return "an empty path";
  if (path.front() == '/') return "an absolute path";
  if (path.size() > kMaxRelativePath) {
    return fmt::format("longer than {} bytes", kMaxRelativePath);
  }
  std::size_t number = 0;
  while (true) {
    ++number;
    std::size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (part.empty()) return fmt::format("component {} is empty", number);
    if (part == "." || part == "..") return fmt::format("component {} is {}", number, part);
    if (part.size() > kMaxStoredName) {
      return fmt::format("component {} is longer than {} bytes", number, kMaxStoredName);
    }
    if (std::any_of(part.begin(), part.end(), is_control)) {
      return fmt::format("component {} has a control character", number);
    }
    if (sanitized(part, kFileNameStyle) != part) {
      return fmt::format("component {} is not UTF-8 or has a bidi or invisible character", number);
    }
    if (part.starts_with(".mux-")) {
      return fmt::format("component {} is named like the server's temporary files", number);
    }
    if (slash == std::string_view::npos) return {};
    path.remove_prefix(slash + 1);
  }
}

std::string format_batch_header(std::uint64_t size, std::string_view path, std::string_view token,
                                std::string_view resume_key, bool ask_offset, bool want_acks,
                                bool directory, std::string_view batch_key) {
  std::string line = format_header_line(directory ? 0 : size, path, token, true,
                                        directory ? std::string_view() : resume_key, ask_offset,
                                        want_acks && !directory);
  line.pop_back();  // the '\n'
  line += fmt::format(" {}=1", kBatchField);
  if (directory) line += fmt::format(" {}=1", kDirField);
  if (!directory && !batch_key.empty())
    line += fmt::format(" {}={} {}=1", kBatchKeyField, batch_key, kConfirmField);
  line.push_back('\n');
  return line;
}

std::string percent_encode(std::string_view text) {
  std::string encoded;
  encoded.reserve(text.size());
  for (char c : text) {
    if (is_unreserved(c)) {
      encoded.push_back(c);
    } else {
      encoded += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return encoded;
}

std::string percent_decode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
        hex_value(text[i + 2]) >= 0) {
      decoded.push_back(static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2])));
      i += 2;
    } else {
      decoded.push_back(text[i]);
    }
  }
  return decoded;
}

std::string sanitize_file_name(std::string_view name, std::string_view fallback) {
  std::size_t slash = name.rfind('/');
  if (slash != std::string_view::npos) name.remove_prefix(slash + 1);
  // The one sanitizer makes it valid UTF-8 without controls, bidi or invisible characters (each
  // becomes '_'); none of its replacements is a '/' or a '.'.
  std::string safe = sanitized(name, kFileNameStyle);
  safe.erase(0, safe.find_first_not_of('.'));
  if (safe.size() > kMaxStoredName) {
    std::size_t cut = kMaxStoredName;
    while (cut > 0 && is_utf8_continuation(safe[cut]))
      --cut;
    safe.resize(cut);
  }
  if (safe.empty()) return std::string(fallback);
  return safe;
}

std::string raw_upload_name(std::uint64_t client_number) {
  return fmt::format("upload-{}.bin", client_number);
}

std::string format_ok_reply(std::uint64_t bytes, std::string_view hash, std::string_view saved_name,
                            bool confirm) {
  std::string fields =
      saved_name.empty() ? std::string() : fmt::format(" name={}", percent_encode(saved_name));
  if (confirm) fields += fmt::format(" {}=1", kConfirmField);
  return fmt::format("OK {} {}{}\n", bytes, hash, fields);
}

std::string format_err_reply(std::string_view reason) {
  std::string line = fmt::format("ERR {}", reason);
  // A reason quoting a strerror or a name must not break the one-line reply.
  std::replace_if(line.begin(), line.end(), is_control, ' ');
  line.push_back('\n');
  return line;
}

std::optional<UploadReply> parse_reply_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line == "ERR") return UploadReply{false, 0, {}, {}, std::nullopt, false};
  if (line.substr(0, 4) == "ERR ")
    return UploadReply{false, 0, {}, std::string(line.substr(4)), std::nullopt, false};
  if (line.substr(0, 3) != "OK ") return std::nullopt;
  std::string_view rest = line.substr(3);
  std::size_t space = rest.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  std::optional<std::uint64_t> bytes = parse_decimal(rest.substr(0, space));
  rest.remove_prefix(space + 1);
  std::string_view hash = rest.substr(0, rest.find(' '));
  bool hex = hash.size() == 32 && std::all_of(hash.begin(), hash.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             });
  if (!bytes || !hex) return std::nullopt;
  ProtocolFields fields;
  if (!parse_fields(rest.substr(hash.size()), fields).empty()) return std::nullopt;
  UploadReply reply{true, *bytes, std::string(hash), {}, std::nullopt, false};
  if (const std::string* name = find_field(fields, "name"); name != nullptr) {
    reply.saved_name = percent_decode(*name);
  }
  const std::string* confirm = find_field(fields, kConfirmField);
  reply.confirm = confirm != nullptr && *confirm == "1";
  return reply;
}

bool transient_refusal(std::string_view reason) {
  for (std::string_view prefix : {"busy:", "server busy", "shutting down", "timeout:"})
    if (reason.starts_with(prefix)) return true;
  return false;
}

bool busy_refusal(std::string_view reason) {
  return reason.starts_with("busy:");
}

std::string printable_reply(std::string_view text) {
  std::string shown(text.substr(0, 300));
  std::replace_if(
      shown.begin(), shown.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }, '?');
  return shown;
}

}  // namespace mux
