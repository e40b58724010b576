// history_stream: a Redis room's history read as peer input, from XREVRANGE answers built by
// hand: oldest first, ids parsed, bad names and empty texts dropped, long lines cut, rising ids
// for /since, and with a secret only signed entries, each once.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "chat/history_stream.hpp"
#include "chat/room_signer.hpp"
#include "core/access/message_mac.hpp"
#include "core/base/logger.hpp"
#include "core/redis/redis_link.hpp"

namespace {

mux::RedisValue text(const std::string& value) {
  mux::RedisValue out;
  out.type = mux::RedisValue::Type::string;
  out.text = value;
  return out;
}

mux::RedisValue array(std::vector<mux::RedisValue> elements) {
  mux::RedisValue out;
  out.type = mux::RedisValue::Type::array;
  out.elements = std::move(elements);
  return out;
}

// One XREVRANGE element: [id, [t, TIME, n, NAME, m, TEXT (, s, SIGNATURE)]].
mux::RedisValue element(const std::string& id, const std::string& name, const std::string& message,
                        const std::string& signature = "") {
  std::vector<mux::RedisValue> fields{text("t"),  text("1700000000"), text("n"),
                                      text(name), text("m"),          text(message)};
  if (!signature.empty()) {
    fields.push_back(text("s"));
    fields.push_back(text(signature));
  }
  return array({text(id), array(std::move(fields))});
}

std::vector<std::string> names(const std::vector<mux::HistoryEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& entry : entries)
    out.push_back(entry.name + ":" + entry.text + "@" + std::to_string(entry.id));
  return out;
}

}  // namespace

TEST_CASE("history stream: the commands") {
  CHECK(mux::history_stream::newest("k", 5) ==
        std::vector<std::string>{"XREVRANGE", "k", "+", "-", "COUNT", "5"});
  CHECK(mux::history_stream::range("k", 3, 9, 100) ==
        std::vector<std::string>{"XREVRANGE", "k", "0-9", "(0-3", "COUNT", "100"});
}

TEST_CASE("history stream: entries oldest first, read as peer input") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", "1-a", std::nullopt);
  // Newest first, as XREVRANGE answers.
  mux::RedisValue reply = array({
      element("0-7", "carol", std::string(50, 'x')),
      element("0-6", "bad name!", "dropped"),
      element("0-5", "bob", ""),  // nothing to show
      array({text("0-4")}),       // not [id, fields]
      element("3-1", "Client 9", "no id of ours"),
      element("0-2", "alice", "hi\x01there"),
  });
  auto read = mux::history_stream::entries(reply, plain, 20, false);
  REQUIRE(read.size() == 3);
  CHECK(read[0].name == "alice");
  CHECK(read[0].id == 2);
  CHECK(read[0].unix_seconds == 1700000000);
  CHECK(read[0].text.find('\x01') == std::string::npos);  // sanitized
  CHECK(read[1].name == "Client 9");
  CHECK(read[1].id == 0);
  CHECK(read[2].name == "carol");
  CHECK(read[2].id == 7);
  CHECK(read[2].text.size() < 50);  // cut at the line limit
  CHECK(read[2].text.starts_with(std::string(20, 'x')));
  // /since: only ids, each above the one before.
  mux::RedisValue replay =
      array({element("0-5", "bob", "late copy"), element("0-9", "bob", "b"),
             element("0-4", "anon", "c"), element("3-1", "x", "d"), element("0-4", "alice", "a")});
  CHECK(names(mux::history_stream::entries(replay, plain, 100, true)) ==
        std::vector<std::string>{"alice:a@4", "bob:b@9"});
}

TEST_CASE("history stream: with a secret, only signed entries, each once") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner writer(logger, "lobby", "1-a", mux::MessageMac("0123456789abcdef-room-secret"));
  mux::RoomSigner reader(logger, "lobby", "2-b", mux::MessageMac("0123456789abcdef-room-secret"));
  std::string batch = "x";
  writer.sign_batch(batch);
  std::string first = writer.history_signature(0, "1700000000", "alice", "one");
  std::string second = writer.history_signature(1, "1700000000", "bob", "two");
  mux::RedisValue reply = array({
      element("0-4", "alice", "one", first),  // a copy of 0-1 under another id
      element("0-3", "mallory", "three"),     // unsigned
      element("0-2", "bob", "two", second),
      element("0-1", "alice", "one", first),
  });
  CHECK(names(mux::history_stream::entries(reply, reader, 100, false)) ==
        std::vector<std::string>{"alice:one@1", "bob:two@2"});
}

TEST_CASE("history stream: what a server missed, its own lines told apart") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", "1-a", std::nullopt);
  auto said_by = [](const std::string& id, const std::string& name, const std::string& server) {
    mux::RedisValue out = element(id, name, "hi " + name);
    out.elements[1].elements.push_back(text("o"));
    out.elements[1].elements.push_back(text(server));
    return out;
  };
  // Newest first; ids must rise (a copy or an entry without an id was not written by the
  // publish script); no "o" field (an older server wrote it): not ours.
  mux::RedisValue reply = array({said_by("0-9", "carol", "2-b"), element("0-8", "dave", "old"),
                                 said_by("0-7", "alice", "1-a"), said_by("0-7", "bob", "2-b"),
                                 said_by("3-1", "erin", "2-b"), said_by("0-5", "bob", "2-b")});
  auto read = mux::history_stream::missed(reply, plain, 100, "1-a");
  std::vector<std::string> seen;
  for (const auto& line : read)
    seen.push_back(line.entry.name + "@" + std::to_string(line.entry.id) +
                   (line.own ? " own" : ""));
  CHECK(seen == std::vector<std::string>{"bob@5", "bob@7", "dave@8", "carol@9"});
  CHECK(mux::history_stream::missed(reply, plain, 100, "2-b").back().own);
}
