#include <doctest/doctest.h>

#include <stdexcept>

#include "core/redis/redis_link.hpp"

using mux::parse_redis_url;
using mux::RedisUrl;

TEST_CASE("redis URL: host and port, defaults") {
  RedisUrl url = parse_redis_url("redis://127.0.0.1:7000");
  CHECK(url.host == "127.0.0.1");
  CHECK(url.port == 7000);
  CHECK(url.db == 0);
  CHECK(url.password.empty());
  url = parse_redis_url("redis://localhost");
  CHECK(url.host == "localhost");
  CHECK(url.port == 6379);
  CHECK(url.describe() == "localhost:6379/0");
}

TEST_CASE("redis URL: password, database, IPv6") {
  RedisUrl url = parse_redis_url("redis://:s3cr@t@10.0.0.1:6380/3");
  CHECK(url.password == "s3cr@t");  // the last '@' ends the password
  CHECK(url.host == "10.0.0.1");
  CHECK(url.port == 6380);
  CHECK(url.db == 3);
  CHECK(url.describe() == "10.0.0.1:6380/3");  // never the password
  url = parse_redis_url("redis://default:pw@[::1]:6390/");
  CHECK(url.user.empty());  // the default user: a one-argument AUTH
  CHECK(url.password == "pw");
  CHECK(url.host == "::1");
  CHECK(url.port == 6390);
  CHECK(url.db == 0);
  CHECK(url.describe() == "[::1]:6390/0");
  CHECK(parse_redis_url("redis://[::1]").port == 6379);
}

TEST_CASE("redis URL: ACL user, escapes, TLS") {
  RedisUrl url = parse_redis_url("redis://chat:p%40ss%3Aw%2frd@h:1");
  CHECK(url.user == "chat");
  CHECK(url.password == "p@ss:w/rd");
  CHECK_FALSE(url.tls);
  CHECK(url.describe() == "h:1/0");
  url = parse_redis_url("rediss://:pw@redis.example/2");
  CHECK(url.tls);
  CHECK(url.user.empty());
  CHECK(url.host == "redis.example");
  CHECK(url.port == 6379);
  CHECK(url.db == 2);
  CHECK(url.describe() == "redis.example:6379/2 (TLS)");
}

TEST_CASE("redis URL: refusals") {
  for (const char* bad : {"",
                          "127.0.0.1:6379",
                          "http://x:1",
                          "rediss://",
                          "redis:/h",
                          "redis://:p%4@h:1",
                          "redis://:p%zz@h:1",
                          "redis://:p%@h:1",
                          "redis://",
                          "redis://:6379",
                          "redis://h:0",
                          "redis://h:65536",
                          "redis://h:-1",
                          "redis://h:12a",
                          "redis://h:",
                          "redis://h:1/x",
                          "redis://h:1/-2",
                          "redis://::1:6379",
                          "redis://[::1",
                          "redis://[::1]x",
                          "redis://pw@h:1",
                          "redis://user:@h:1",
                          "redis://:@h:1",
                          "redis://h:1/99999999999"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_redis_url(bad), std::invalid_argument);
  }
}
