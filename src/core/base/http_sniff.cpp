#include "core/base/http_sniff.hpp"

#include <algorithm>
#include <array>
#include <string>

namespace mux {
namespace {

constexpr std::array<std::string_view, 9> kMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
constexpr std::string_view kVersionPrefix = " HTTP/1.";

bool is_target_byte(char c) {
  auto byte = static_cast<unsigned char>(c);
  return byte > 0x20 && byte != 0x7f;
}

// Whether `text`, all of it, could still grow into `word` (or already is it).
bool could_become(std::string_view text, std::string_view word) {
  return text.size() <= word.size() && word.substr(0, text.size()) == text;
}

// The method with its space, or the empty view when `prefix` cannot start with one. Sets
// `partial` when the prefix is still too short to tell.
std::string_view match_method(std::string_view prefix, bool& partial) {
  partial = false;
  for (std::string_view method : kMethods) {
    if (prefix.size() > method.size()) {
      if (prefix.substr(0, method.size()) == method && prefix[method.size()] == ' ') {
        return prefix.substr(0, method.size() + 1);
      }
    } else if (could_become(prefix, method)) {
      partial = true;
    }
  }
  return {};
}

// Whether `prefix` starts with "host:" in any case; `partial` when it is still too short to tell.
bool starts_with_host_header(std::string_view prefix, bool& partial) {
  constexpr std::string_view kHost = "host:";
  std::size_t compared = std::min(prefix.size(), kHost.size());
  for (std::size_t i = 0; i < compared; ++i) {
    char c = prefix[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kHost[i]) return false;
  }
  partial = compared < kHost.size();
  return !partial;
}

}  // namespace

HttpSniff sniff_http_request(std::string_view prefix) {
  bool host_partial = false;
  if (starts_with_host_header(prefix, host_partial)) return HttpSniff::http_header;
  bool partial = false;
  std::string_view method = match_method(prefix, partial);
  if (method.empty()) {
    return partial || host_partial ? HttpSniff::need_more : HttpSniff::not_http;
  }
  std::size_t newline = prefix.find('\n');
  std::string_view line = prefix.substr(0, newline);
  if (line.size() >= kMaxHttpRequestLine) return HttpSniff::not_http;
  std::string_view rest = line.substr(method.size());  // TARGET SP HTTP/1.D [CR]
  std::size_t target_end = 0;
  while (target_end < rest.size() && is_target_byte(rest[target_end]))
    ++target_end;
  // Still inside the target: everything so far fits, the line is not complete.
  if (target_end == rest.size())
    return newline == std::string_view::npos ? HttpSniff::need_more : HttpSniff::not_http;
  if (target_end == 0) return HttpSniff::not_http;
  std::string_view version = rest.substr(target_end);  // " HTTP/1.D" and maybe "\r"
  if (newline == std::string_view::npos) {
    // Incomplete: it can still become a request line only while it follows the pattern.
    if (could_become(version, kVersionPrefix)) return HttpSniff::need_more;
    if (!version.starts_with(kVersionPrefix)) return HttpSniff::not_http;
    std::string_view tail = version.substr(kVersionPrefix.size());
    if (tail.empty()) return HttpSniff::need_more;
    bool digit = tail[0] >= '0' && tail[0] <= '9';
    if (!digit || tail.size() > 2 || (tail.size() == 2 && tail[1] != '\r')) {
      return HttpSniff::not_http;
    }
    return HttpSniff::need_more;
  }
  if (!version.empty() && version.back() == '\r') version.remove_suffix(1);
  bool matches = version.size() == kVersionPrefix.size() + 1 &&
                 version.starts_with(kVersionPrefix) && version.back() >= '0' &&
                 version.back() <= '9';
  return matches ? HttpSniff::http_request : HttpSniff::not_http;
}

bool looks_like_http_request(std::string_view line) {
  if (line.size() >= kMaxHttpRequestLine) return false;
  std::string terminated(line);
  terminated += '\n';
  HttpSniff sniff = sniff_http_request(terminated);
  return sniff == HttpSniff::http_request || sniff == HttpSniff::http_header;
}

}  // namespace mux
