// The HTTP request-line rule, exactly as the man page states it: which first lines are HTTP,
// which are not, and when more bytes are needed to tell.
#include <doctest/doctest.h>

#include <string>

#include "core/base/http_sniff.hpp"

using mux::HttpSniff;
using mux::looks_like_http_request;
using mux::sniff_http_request;

TEST_CASE("request lines of every method and both versions are HTTP") {
  for (const char* line :
       {"GET / HTTP/1.1\r\n", "POST /upload HTTP/1.0\n", "PUT /x HTTP/1.1\r\nHost: a\r\n",
        "HEAD / HTTP/1.1\n", "OPTIONS * HTTP/1.1\n", "DELETE /a?b=c HTTP/1.1\n",
        "CONNECT example.com:443 HTTP/1.1\n", "TRACE / HTTP/1.1\n", "PATCH /p HTTP/1.1\n"}) {
    CAPTURE(line);
    CHECK(sniff_http_request(line) == HttpSniff::http_request);
  }
}

TEST_CASE("a prefix of a request line needs more bytes") {
  std::string line = "POST /a/b HTTP/1.1\r\n";
  for (std::size_t n = 0; n < line.size(); ++n) {
    CAPTURE(n);
    CHECK(sniff_http_request(line.substr(0, n)) == HttpSniff::need_more);
  }
  CHECK(sniff_http_request(line) == HttpSniff::http_request);
}

TEST_CASE("text that merely starts like a request is not HTTP") {
  for (const char* text :
       {"GET", "GET\n", "GETTING STARTED\n", "GET /x\n", "GET /x HTTP/2.0\n", "GET /x HTTP/1.1 \n",
        "GET  / HTTP/1.1\n", "GET / HTTP/1.12\n", "get / HTTP/1.1\n", "GET / http/1.1\n",
        "GET /x Hello\n", "POSTAL code\n", "MUXUP/1 5 x\n", "GET /\x01 HTTP/1.1\n", "\n", "x"}) {
    CAPTURE(text);
    HttpSniff result = sniff_http_request(text);
    // "GET" alone might still grow into a request line; everything else is decided.
    if (std::string(text) == "GET") {
      CHECK(result == HttpSniff::need_more);
    } else {
      CHECK(result == HttpSniff::not_http);
    }
  }
}

TEST_CASE("a stream that starts with a Host header, in any case, is HTTP") {
  for (const char* text : {"Host:", "host: a\n", "HOST:127.0.0.1:5000\r\n", "hOsT: x"}) {
    CAPTURE(text);
    CHECK(sniff_http_request(text) == HttpSniff::http_header);
  }
  for (const char* text : {"", "H", "h", "ho", "HOS", "Host"}) {
    CAPTURE(text);
    CHECK(sniff_http_request(text) == HttpSniff::need_more);
  }
  for (const char* text : {"Hosting: x\n", " Host: x\n", "Host x\n", "Hos\n", "hosts\n"}) {
    CAPTURE(text);
    CHECK(sniff_http_request(text) == HttpSniff::not_http);
  }
}

TEST_CASE("a first line longer than the limit is not HTTP") {
  std::string line = "GET /" + std::string(mux::kMaxHttpRequestLine, 'a');
  CHECK(sniff_http_request(line) == HttpSniff::not_http);
  CHECK(sniff_http_request(line + " HTTP/1.1\n") == HttpSniff::not_http);
  std::string fits = "GET /" + std::string(mux::kMaxHttpRequestLine - 20, 'a') + " HTTP/1.1\n";
  CHECK(sniff_http_request(fits) == HttpSniff::http_request);
}

TEST_CASE("a complete first line of a line protocol: request lines and a Host header") {
  CHECK(looks_like_http_request("GET / HTTP/1.1"));
  CHECK(looks_like_http_request("POST / HTTP/1.1\r"));
  CHECK(looks_like_http_request("CONNECT 127.0.0.1:5000 HTTP/1.1"));
  CHECK(looks_like_http_request("Host: 127.0.0.1:5000"));
  CHECK(looks_like_http_request("host:x"));
  CHECK(looks_like_http_request("HOST:"));
  CHECK_FALSE(looks_like_http_request("GET"));
  CHECK_FALSE(looks_like_http_request("GET me a coffee"));
  CHECK_FALSE(looks_like_http_request("GET / HTTP/1.1 please"));
  CHECK_FALSE(looks_like_http_request("PROPFIND /dav HTTP/1.1"));
  CHECK_FALSE(looks_like_http_request("Hosting: x"));
  CHECK_FALSE(looks_like_http_request(" Host: x"));
  CHECK_FALSE(looks_like_http_request("Hos"));
  CHECK_FALSE(looks_like_http_request("MUXUP/1 5 name"));
  CHECK_FALSE(looks_like_http_request(""));
  CHECK_FALSE(looks_like_http_request("GET " + std::string(5000, 'a') + " HTTP/1.1"));
}
