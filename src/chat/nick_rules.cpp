#include "chat/nick_rules.hpp"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include <fmt/format.h>

#include <stdexcept>

namespace mux::chat {
namespace {

using UString = std::u16string;

void check(UErrorCode status, std::string_view what) {
  if (U_FAILURE(status))
    throw std::runtime_error(fmt::format("ICU {}: {}", what, u_errorName(status)));
}

UString to_utf16(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  // Nicks are short and already valid UTF-8 (nick_problem ran first): twice the bytes is plenty.
  UString out(text.size() * 2 + 1, u'\0');
  u_strFromUTF8(out.data(), static_cast<int32_t>(out.size()), &length, text.data(),
                static_cast<int32_t>(text.size()), &status);
  check(status, "UTF-8 to UTF-16");
  out.resize(static_cast<std::size_t>(length));
  return out;
}

std::string to_utf8(const UString& text) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  std::string out(text.size() * 3 + 1, '\0');
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &length, text.data(),
              static_cast<int32_t>(text.size()), &status);
  check(status, "UTF-16 to UTF-8");
  out.resize(static_cast<std::size_t>(length));
  return out;
}

UString skeleton(const USpoofChecker* checker, const UString& text) {
  UErrorCode status = U_ZERO_ERROR;
  UString out(text.size() * 4 + 8, u'\0');
  int32_t length = uspoof_getSkeleton(checker, 0, text.data(), static_cast<int32_t>(text.size()),
                                      out.data(), static_cast<int32_t>(out.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    out.resize(static_cast<std::size_t>(length));
    length = uspoof_getSkeleton(checker, 0, text.data(), static_cast<int32_t>(text.size()),
                                out.data(), static_cast<int32_t>(out.size()), &status);
  }
  check(status, "skeleton");
  out.resize(static_cast<std::size_t>(length));
  return out;
}

UString normalize(const UNormalizer2* normalizer, const UString& text) {
  UErrorCode status = U_ZERO_ERROR;
  UString out(text.size() * 4 + 8, u'\0');
  int32_t length = unorm2_normalize(normalizer, text.data(), static_cast<int32_t>(text.size()),
                                    out.data(), static_cast<int32_t>(out.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    out.resize(static_cast<std::size_t>(length));
    length = unorm2_normalize(normalizer, text.data(), static_cast<int32_t>(text.size()),
                              out.data(), static_cast<int32_t>(out.size()), &status);
  }
  check(status, "normalize");
  out.resize(static_cast<std::size_t>(length));
  return out;
}

bool is_mark(UChar32 c) {
  return (U_GET_GC_MASK(c) & U_GC_M_MASK) != 0;
}

// Keeps letters, digits and marks: "Client_1", "Client-1" and "Client 1" are one name to a reader.
UString letters_and_digits(const UString& text) {
  UString out;
  for (int32_t at = 0; at < static_cast<int32_t>(text.size());) {
    UChar32 c = 0;
    int32_t start = at;
    U16_NEXT(text.data(), at, static_cast<int32_t>(text.size()), c);
    if (u_isalnum(c) || is_mark(c))
      out.append(text, static_cast<std::size_t>(start), static_cast<std::size_t>(at - start));
  }
  return out;
}

std::size_t most_marks_in_a_row(const UString& text) {
  std::size_t most = 0;
  std::size_t run = 0;
  for (int32_t at = 0; at < static_cast<int32_t>(text.size());) {
    UChar32 c = 0;
    U16_NEXT(text.data(), at, static_cast<int32_t>(text.size()), c);
    run = is_mark(c) ? run + 1 : 0;
    if (run > most) most = run;
  }
  return most;
}

}  // namespace

void NickRules::CloseChecker::operator()(USpoofChecker* checker) const noexcept {
  uspoof_close(checker);
}

NickRules::NickRules() {
  UErrorCode status = U_ZERO_ERROR;
  checker_.reset(uspoof_open(&status));
  check(status, "spoof checker");
  uspoof_setRestrictionLevel(checker_.get(), USPOOF_HIGHLY_RESTRICTIVE);
  uspoof_setChecks(checker_.get(),
                   USPOOF_RESTRICTION_LEVEL | USPOOF_INVISIBLE | USPOOF_MIXED_NUMBERS, &status);
  check(status, "spoof checks");
  default_name_key_ = look_alike_key("Client");
  for (char digit = '0'; digit <= '9'; ++digit)
    digit_keys_.push_back(look_alike_key(std::string_view(&digit, 1)));
}

NickRules::~NickRules() = default;

std::string NickRules::look_alike_key(std::string_view nick) const {
  // Skeleton, then fold case (NFKC_Casefold also maps full-width and compatibility forms), twice:
  // the first skeleton sees that "I" looks like "l" before folding makes it "i", the second that
  // "0" (skeleton "O", folded "o") looks like "o". Since "I" is both a capital "i" and a look-alike
  // of "l", the two letters are one in the key ("alice" and "ALICE" must collide, and so must
  // "Client" and "CIient").
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* fold = unorm2_getNFKCCasefoldInstance(&status);
  check(status, "NFKC_Casefold");
  UString text = to_utf16(nick);
  for (int pass = 0; pass < 2; ++pass)
    text = normalize(fold, skeleton(checker_.get(), text));
  for (char16_t& c : text) {
    if (c == u'i') c = u'l';
  }
  UString letters = letters_and_digits(text);
  // A nick of symbols only ("<3", an emoji) is compared as it is.
  return to_utf8(letters.empty() ? text : letters);
}

bool NickRules::poses_as_default_name(const std::string& key) const {
  if (key.compare(0, default_name_key_.size(), default_name_key_) != 0) return false;
  std::string_view rest = std::string_view(key).substr(default_name_key_.size());
  while (!rest.empty()) {
    bool matched = false;
    for (const std::string& digit : digit_keys_) {
      if (rest.substr(0, digit.size()) == digit) {
        rest.remove_prefix(digit.size());
        matched = true;
        break;
      }
    }
    if (!matched) {
      // Digits of other systems ("٣") are digits too.
      UString tail = to_utf16(rest);
      UChar32 c = 0;
      int32_t at = 0;
      U16_NEXT(tail.data(), at, static_cast<int32_t>(tail.size()), c);
      if (!u_isdigit(c)) return false;
      rest.remove_prefix(to_utf8(tail.substr(0, static_cast<std::size_t>(at))).size());
    }
  }
  return true;
}

std::optional<std::string> NickRules::problem(std::string_view nick) const {
  UErrorCode status = U_ZERO_ERROR;
  int32_t result = uspoof_checkUTF8(checker_.get(), nick.data(), static_cast<int32_t>(nick.size()),
                                    nullptr, &status);
  if (U_FAILURE(status)) return "it is not valid UTF-8";
  if (result & USPOOF_RESTRICTION_LEVEL) return "it mixes scripts (such as Latin and Cyrillic)";
  if (result & USPOOF_MIXED_NUMBERS) return "it mixes digits of different number systems";
  if (result & USPOOF_INVISIBLE) return "it repeats a combining mark";
  status = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&status);
  check(status, "NFC");
  if (most_marks_in_a_row(normalize(nfc, to_utf16(nick))) > kMaxMarksPerCharacter)
    return fmt::format("more than {} combining marks on one character", kMaxMarksPerCharacter);
  std::string key = look_alike_key(nick);
  if (poses_as_default_name(key)) return "it looks like a default name (Client N)";
  return std::nullopt;
}

}  // namespace mux::chat
