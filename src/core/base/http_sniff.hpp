// Recognising an HTTP/1.x request line at the start of a stream, so a server speaking its own
// protocol can refuse a web client (or a web page aiming a browser at localhost) instead of
// treating the request as data. A pure function of the bytes seen so far; used by upload-server
// on the first bytes of every connection, and meant for chat-server as well.
#pragma once

#include <cstddef>
#include <string_view>

namespace mux {

enum class HttpSniff {
  not_http,      // the stream cannot start with an HTTP/1.x request line
  need_more,     // it might: the first line is not complete yet
  http_request,  // the first line is an HTTP/1.x request line
  http_header    // the stream starts with a `Host:` header (a request seen from its second line)
};

// The longest first line examined; a longer one is not taken for a request line.
inline constexpr std::size_t kMaxHttpRequestLine = 4096;

// The rule, exactly: the first line (up to the first '\n', an optional '\r' before it removed)
// is `METHOD SP TARGET SP HTTP/1.D` where METHOD is one of GET HEAD POST PUT DELETE CONNECT
// OPTIONS TRACE PATCH (upper case), TARGET is one or more bytes that are neither space nor a
// control character, and D is one decimal digit. Anything else - "GET" followed by other text,
// a line without the version, a first line longer than kMaxHttpRequestLine - is not HTTP.
// A stream that starts with "Host:" in any case is an HTTP header (http_header): what a line
// protocol sees when the request line was eaten by something else, and what redis refuses too.
// `prefix` is the start of the stream as received so far.
HttpSniff sniff_http_request(std::string_view prefix);

// For a protocol of lines (chat-server checks a client's first line): `line` is one complete line
// without its '\n'. True when it is a request line or a Host header by the rules above.
bool looks_like_http_request(std::string_view line);

}  // namespace mux
