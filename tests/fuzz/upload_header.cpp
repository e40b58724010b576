// MUXUP/1 from a peer: the header line, the reply line, the percent-encoding of names and the
// file name the server would create from a client's name.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "core/base/sanitize.hpp"
#include "fuzz_check.hpp"
#include "targets.hpp"
#include "upload/upload_protocol.hpp"

namespace mux::fuzz::upload_header {
namespace {

// A decimal byte count as the header carries it, read without the code under test: nullopt
// unless all digits and at most 2^64 - 1 (compared as text, so nothing here can overflow).
std::optional<std::uint64_t> reference_decimal(std::string_view text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  std::string_view significant = text.substr(std::min(text.find_first_not_of('0'), text.size()));
  constexpr std::string_view kMax = "18446744073709551615";
  if (significant.size() > kMax.size() || (significant.size() == kMax.size() && significant > kMax))
    return std::nullopt;
  std::uint64_t value = 0;
  for (char c : significant)
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  return value;
}

bool has_control_byte(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    auto byte = static_cast<unsigned char>(c);
    return byte < 0x20 || byte == 0x7F;
  });
}

// The fields after the name by the SEAMS grammar: ` key=value` each, a non-empty key, no key twice.
// nullopt when one is malformed.
std::optional<std::vector<std::pair<std::string, std::string>>> reference_fields(
    std::string_view text) {
  std::vector<std::pair<std::string, std::string>> fields;
  while (!text.empty()) {
    text.remove_prefix(1);  // the space before each field
    std::string_view field = text.substr(0, text.find(' '));
    text.remove_prefix(field.size());
    std::size_t equals = field.find('=');
    if (equals == std::string_view::npos || equals == 0) return std::nullopt;
    std::string key(field.substr(0, equals));
    for (const auto& seen : fields) {
      if (seen.first == key) return std::nullopt;
    }
    fields.emplace_back(std::move(key), std::string(field.substr(equals + 1)));
  }
  return fields;
}

void check_header(std::string_view line) {
  HeaderParse parsed = parse_header_line(line);
  bool has_magic = line.substr(0, kUploadMagic.size()) == kUploadMagic;
  std::string_view rest = has_magic ? line.substr(kUploadMagic.size()) : std::string_view{};
  if (has_magic && !rest.empty() && rest.back() == '\r') rest.remove_suffix(1);
  std::size_t space = rest.find(' ');
  std::string_view size_text = rest.substr(0, space);
  bool unknown_size = size_text == "-";  // a stream of unknown length
  std::optional<std::uint64_t> size = reference_decimal(size_text);
  std::string_view after_size =
      space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
  std::string_view name_text = after_size.substr(0, after_size.find(' '));
  auto fields = reference_fields(after_size.substr(name_text.size()));
  bool acceptable =
      has_magic && (size || unknown_size) && space != std::string_view::npos && fields;
  FUZZ_CHECK(parsed.header.has_value() == acceptable,
             fmt::format("{} -> {}", printable(line), parsed.header ? "accepted" : parsed.error));
  if (!parsed.header) {
    FUZZ_CHECK(!parsed.error.empty(), "a refusal says why");
    return;
  }
  FUZZ_CHECK(parsed.header->size == (unknown_size ? std::nullopt : size), printable(line));
  FUZZ_CHECK(parsed.header->name == percent_decode(name_text), printable(line));
  FUZZ_CHECK(parsed.header->fields == *fields, printable(line));

  // What a client would send for this header parses back to the same header.
  std::string sent = format_header_line(parsed.header->size, parsed.header->name);
  FUZZ_CHECK(sent.back() == '\n' && sent.find('\n') == sent.size() - 1, printable(sent));
  FUZZ_CHECK(!has_control_byte(std::string_view(sent).substr(0, sent.size() - 1)), printable(sent));
  HeaderParse again = parse_header_line(std::string_view(sent).substr(0, sent.size() - 1));
  FUZZ_CHECK(again.header && again.header->size == parsed.header->size &&
                 again.header->name == parsed.header->name,
             printable(sent));

  // With an upload key: the resume= field goes with a known size only, and comes back as sent.
  constexpr std::string_view kKey = "0123456789abcdef0123456789abcdef";
  std::string resumable =
      format_header_line(parsed.header->size, parsed.header->name, {}, false, kKey, true);
  HeaderParse keyed =
      parse_header_line(std::string_view(resumable).substr(0, resumable.size() - 1));
  FUZZ_CHECK(keyed.header, printable(resumable));
  const std::string* key = keyed.header->field(kResumeField);
  FUZZ_CHECK(parsed.header->size ? key != nullptr && *key == kKey && valid_upload_key(*key)
                                 : key == nullptr,
             printable(resumable));
  FUZZ_CHECK(asks_resume_offer(*keyed.header) == parsed.header->size.has_value(),
             printable(resumable));
  // A header as parsed asks for an offer exactly when the reference fields say so.
  const std::string* ask = parsed.header->field(kResumeAskField);
  FUZZ_CHECK(asks_resume_offer(*parsed.header) ==
                 (parsed.header->size && parsed.header->field(kResumeField) != nullptr &&
                  ask != nullptr && *ask == "1"),
             printable(line));
}

// `RESUME <offset> <hash>` and `FROM <offset>` against a reference reading of the same grammar.
void check_resume_lines(std::string_view line) {
  std::string_view text = line;
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  std::optional<ResumeOffer> offer = parse_resume_offer(line);
  bool offer_shape = text.starts_with("RESUME ");
  std::string_view offer_rest = offer_shape ? text.substr(7) : std::string_view{};
  std::size_t space = offer_rest.find(' ');
  std::optional<std::uint64_t> offset = reference_decimal(offer_rest.substr(0, space));
  std::string_view hash =
      space == std::string_view::npos ? std::string_view{} : offer_rest.substr(space + 1);
  bool hash_ok =
      hash.size() == 32 && hash.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  FUZZ_CHECK(
      offer.has_value() == (offer_shape && space != std::string_view::npos && offset && hash_ok),
      printable(line));
  if (offer) {
    FUZZ_CHECK(offer->offset == *offset && offer->prefix_hash == hash, printable(line));
    std::string sent = format_resume_offer(offer->offset, offer->prefix_hash);
    FUZZ_CHECK(sent.find('\n') == sent.size() - 1, printable(sent));
    std::optional<ResumeOffer> again =
        parse_resume_offer(std::string_view(sent).substr(0, sent.size() - 1));
    FUZZ_CHECK(again && again->offset == offer->offset && again->prefix_hash == offer->prefix_hash,
               printable(sent));
  }
  std::optional<std::uint64_t> from = parse_resume_from(line);
  std::optional<std::uint64_t> reference_from =
      text.starts_with("FROM ") ? reference_decimal(text.substr(5)) : std::nullopt;
  FUZZ_CHECK(from == reference_from, printable(line));
  if (from) {
    std::string sent = format_resume_from(*from);
    FUZZ_CHECK(parse_resume_from(std::string_view(sent).substr(0, sent.size() - 1)) == from,
               printable(sent));
  }
}

void check_percent_encoding(std::string_view text) {
  std::string encoded = percent_encode(text);
  FUZZ_CHECK(percent_decode(encoded) == text, printable(text));
  FUZZ_CHECK(encoded.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789-._~%") == std::string::npos,
             printable(encoded));
}

void check_file_name(std::string_view name) {
  constexpr std::string_view kFallback = "upload-7.bin";
  std::string stored = sanitize_file_name(name, kFallback);
  FUZZ_CHECK(!stored.empty(), printable(name));
  FUZZ_CHECK(stored.size() <= kMaxStoredName, printable(stored));
  FUZZ_CHECK(stored.find('/') == std::string::npos, printable(stored));
  FUZZ_CHECK(stored.front() != '.', printable(stored));
  FUZZ_CHECK(stored.find('\0') == std::string::npos, printable(stored));
  FUZZ_CHECK(!has_control_byte(stored), printable(stored));
  // Whatever the name, the stored one is valid UTF-8 (never cut inside a character) and the one
  // sanitizer has nothing left to replace in it (no C1, bidi or invisible characters).
  FUZZ_CHECK(is_valid_utf8(stored), printable(stored));
  FUZZ_CHECK(mux::sanitized(stored, mux::kFileNameStyle) == stored, printable(stored));
  // Already a good name: kept as it is.
  bool plain = !name.empty() && name.size() <= kMaxStoredName && name.front() != '.' &&
               name.find('/') == std::string_view::npos && !has_control_byte(name) &&
               is_valid_utf8(name) && mux::sanitized(name, mux::kFileNameStyle) == name;
  if (plain) FUZZ_CHECK(stored == name, printable(name));
}

void check_reply(std::string_view line) {
  std::optional<UploadReply> reply = parse_reply_line(line);
  if (!reply) return;
  if (!reply->ok) {
    std::string sent = format_err_reply(reply->reason);
    FUZZ_CHECK(sent.find('\n') == sent.size() - 1, printable(sent));
    return;
  }
  FUZZ_CHECK(reply->hash.size() == 32 &&
                 reply->hash.find_first_not_of("0123456789abcdef") == std::string::npos,
             printable(line));
  std::string saved_name = reply->saved_name.value_or("");
  std::string sent = format_ok_reply(reply->bytes, reply->hash, saved_name);
  FUZZ_CHECK(sent.find('\n') == sent.size() - 1, printable(sent));
  std::optional<UploadReply> again =
      parse_reply_line(std::string_view(sent).substr(0, sent.size() - 1));
  FUZZ_CHECK(again && again->ok && again->bytes == reply->bytes && again->hash == reply->hash,
             printable(sent));
  // The name survives the trip whatever its bytes (an empty one is not sent at all).
  FUZZ_CHECK(again->saved_name.value_or("") == saved_name, printable(sent));
}

}  // namespace

// The whole input is one line (header, reply, or name); every parser sees it.
void check_one_input(const std::uint8_t* data, std::size_t size) {
  InputReader input(data, size);
  std::string_view line = input.take_rest();
  check_header(line);
  check_percent_encoding(line);
  check_file_name(line);
  check_file_name(percent_decode(line));
  check_reply(line);
  check_resume_lines(line);
}

}  // namespace mux::fuzz::upload_header
