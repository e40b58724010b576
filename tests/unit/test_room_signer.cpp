// RoomSigner: what one server of a --room-secret-file room signs, another with the same secret
// takes, and one with another secret (or a Redis-level writer without one) does not; without a
// secret every value is written bare and everything read passes.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <unordered_set>

#include "chat/room_event.hpp"
#include "chat/room_signer.hpp"
#include "core/access/message_mac.hpp"
#include "core/base/logger.hpp"

namespace {

constexpr const char* kSecret = "0123456789abcdef-room-secret";
constexpr const char* kWriter = "100-0000000a";
constexpr const char* kReader = "200-0000000b";

mux::RoomSigner signer(mux::Logger& logger, const char* id, const char* secret = kSecret) {
  return {logger, "lobby", id, mux::MessageMac(secret)};
}

std::string signed_batch(mux::RoomSigner& writer, const std::string& text) {
  std::string batch;
  mux::chat::encode_room_event(batch, kWriter,
                               {mux::chat::RoomEventKind::message, "alice", text, {}, false});
  writer.sign_batch(batch);
  return batch;
}

}  // namespace

TEST_CASE("room signer: without a secret, values are bare and everything read passes") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", kWriter, std::nullopt);
  CHECK_FALSE(plain.signs());
  CHECK(plain.member_entry("alice") == "alice");
  CHECK(plain.version(7) == "7");
  CHECK(plain.nick_holder("alice") == kWriter);
  CHECK(plain.registration(7).empty());
  CHECK(plain.history_signature(0, "1", "alice", "hi").empty());
  std::string batch = "unchanged";
  plain.sign_batch(batch);
  CHECK(batch == "unchanged");
  CHECK(plain.member_name(kReader, "bob") == std::optional<std::string_view>("bob"));
  CHECK(plain.version_text(kReader, "12") == std::optional<std::string_view>("12"));
  CHECK(plain.holder_verified("bob", "anything"));
  CHECK(plain.listed_version(kReader, "12", "") == std::optional<std::uint64_t>(12));
  CHECK(plain.listed_version(kReader, "", "") == std::optional<std::uint64_t>(0));
  std::unordered_set<std::string> nonces;
  CHECK(plain.history_verified("0-1", "", "1", "bob", "hi", nonces));
}

TEST_CASE("room signer: what one server signs, another with the secret takes") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner writer = signer(logger, kWriter);
  mux::RoomSigner reader = signer(logger, kReader);
  mux::RoomSigner stranger = signer(logger, kReader, "another secret of sixteen bytes");
  CHECK(writer.signs());

  std::string entry = writer.member_entry("alice");
  CHECK(entry.size() == mux::MessageMac::kTagChars + 1 + 5);
  CHECK(reader.member_name(kWriter, entry) == std::optional<std::string_view>("alice"));
  // Bound to the server: the same entry is refused in another server's set.
  CHECK_FALSE(reader.member_name(kReader, entry));
  CHECK_FALSE(reader.member_name(kWriter, "alice"));
  CHECK_FALSE(stranger.member_name(kWriter, entry));
  std::string forged = entry;
  forged.back() = 'X';
  CHECK_FALSE(reader.member_name(kWriter, forged));

  CHECK(reader.version_text(kWriter, writer.version(41)) == std::optional<std::string_view>("41"));
  CHECK_FALSE(reader.version_text(kWriter, "41"));
  CHECK_FALSE(stranger.version_text(kWriter, writer.version(41)));
  CHECK(reader.version_text(kWriter, "") == std::optional<std::string_view>(""));

  std::string holder = writer.nick_holder("alice");
  CHECK(holder.starts_with(std::string(kWriter) + " "));
  CHECK(reader.holder_verified("alice", holder));
  CHECK_FALSE(reader.holder_verified("bob", holder));  // the tag binds the nick
  CHECK_FALSE(reader.holder_verified("alice", kWriter));
  CHECK_FALSE(stranger.holder_verified("alice", holder));

  CHECK(reader.listed_version(kWriter, "", writer.registration(9)) ==
        std::optional<std::uint64_t>(9));
  // The versions hash does not count with a secret: only the signed registration does.
  CHECK_FALSE(reader.listed_version(kWriter, "9", ""));
  CHECK_FALSE(reader.listed_version(kReader, "", writer.registration(9)));
  CHECK_FALSE(stranger.listed_version(kWriter, "", writer.registration(9)));
}

TEST_CASE("room signer: a registration older than the window is refused") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner reader = signer(logger, kReader);
  mux::MessageMac mac(kSecret);
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  auto registration = [&](long long age_ms) {
    std::string millis = std::to_string(now_ms - age_ms);
    return millis + " 3 " + mac.tag({"lobby", "server", kWriter, millis, "3"});
  };
  auto window = std::chrono::milliseconds(mux::RoomSigner::kRegistrationWindow).count();
  CHECK(reader.listed_version(kWriter, "", registration(window / 2)) ==
        std::optional<std::uint64_t>(3));
  CHECK_FALSE(reader.listed_version(kWriter, "", registration(window + 5000)));
}

TEST_CASE("room signer: a batch passes once, signed, from the room") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner writer = signer(logger, kWriter);
  mux::RoomSigner reader = signer(logger, kReader);
  mux::RoomSigner stranger = signer(logger, kReader, "another secret of sixteen bytes");

  std::string first = signed_batch(writer, "one");
  std::string second = signed_batch(writer, "two");
  auto decode = [](const std::string& payload) {
    auto batch = mux::chat::decode_room_events(payload, 1000);
    REQUIRE(batch);
    return *batch;
  };
  CHECK_FALSE(stranger.batch_verified(decode(first), first));
  CHECK(reader.batch_verified(decode(first), first));
  CHECK_FALSE(reader.batch_verified(decode(first), first));  // a replay
  CHECK(reader.batch_verified(decode(second), second));
  CHECK_FALSE(reader.batch_verified(decode(first), first));  // older than the last

  std::string unsigned_batch;
  mux::chat::encode_room_event(unsigned_batch, kWriter,
                               {mux::chat::RoomEventKind::message, "alice", "three", {}, false});
  CHECK_FALSE(reader.batch_verified(decode(unsigned_batch), unsigned_batch));

  // The text changed after signing: the tag no longer matches.
  std::string altered = signed_batch(writer, "four");
  altered.replace(altered.find("four"), 4, "f0ur");
  CHECK_FALSE(reader.batch_verified(decode(altered), altered));
}

TEST_CASE("room signer: history entries are signed per message, and a copy is refused") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner writer = signer(logger, kWriter);
  mux::RoomSigner reader = signer(logger, kReader);
  signed_batch(writer, "one");
  std::string zero = writer.history_signature(0, "1700000000", "alice", "one");
  std::string one = writer.history_signature(1, "1700000000", "alice", "one");
  CHECK(zero != one);  // the nonce tells the messages of a batch apart

  std::unordered_set<std::string> nonces;
  CHECK(reader.history_verified("0-1", zero, "1700000000", "alice", "one", nonces));
  CHECK(reader.history_verified("0-2", one, "1700000000", "alice", "one", nonces));
  CHECK_FALSE(reader.history_verified("0-3", zero, "1700000000", "alice", "one", nonces));
  std::unordered_set<std::string> fresh;
  CHECK_FALSE(reader.history_verified("0-1", zero, "1700000000", "mallory", "one", fresh));
  CHECK_FALSE(reader.history_verified("0-1", "", "1700000000", "alice", "one", fresh));
}
