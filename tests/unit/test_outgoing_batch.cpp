// OutgoingBatch: one loop batch of this server's events, sealed with its "v" line and (with a
// secret) its signature, the member-set changes for Redis, and each message's fields.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "chat/outgoing_batch.hpp"
#include "chat/room_event.hpp"
#include "chat/room_signer.hpp"
#include "core/access/message_mac.hpp"
#include "core/base/logger.hpp"

namespace {

using mux::chat::RoomEvent;
using mux::chat::RoomEventKind;
constexpr const char* kId = "100-0000000a";

mux::chat::RoomBatch decode(const std::string& payload) {
  auto batch = mux::chat::decode_room_events(payload, 1000);
  REQUIRE(batch);
  return *batch;
}

}  // namespace

TEST_CASE("outgoing batch: events, the version after them, the member changes, the messages") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", kId, std::nullopt);
  mux::OutgoingBatch batch(kId, plain);
  CHECK(batch.empty());
  CHECK_FALSE(batch.add({RoomEventKind::joined, "alice", "", {}, false}, 1700000000));
  CHECK_FALSE(batch.add({RoomEventKind::message, "alice", "hi", {}, false}, 1700000001));
  CHECK_FALSE(batch.add({RoomEventKind::renamed, "alice", "bob", {}, false}, 1700000002));
  CHECK(batch.messages() == 1);
  CHECK(batch.version() == 2);
  auto sealed = batch.seal();
  CHECK(batch.empty());
  CHECK(batch.messages() == 0);
  CHECK(sealed.member_changes == std::vector<std::string>{"+alice", "-alice", "+bob"});
  CHECK(sealed.message_fields == std::vector<std::string>{"1700000001", "alice", "hi", ""});
  CHECK(sealed.messages() == 1);
  auto decoded = decode(sealed.payload);
  CHECK(decoded.server_id == kId);
  REQUIRE(decoded.events.size() == 3);
  CHECK(decoded.events[2].text == "bob");
  CHECK(decoded.members_version == std::optional<std::uint64_t>(2));
  CHECK_FALSE(decoded.sequence);

  // Messages only: no "v" line, no member changes; a re-sync step shows in the next "v".
  batch.add({RoomEventKind::message, "bob", "again", {}, false}, 1700000003);
  sealed = batch.seal();
  CHECK(sealed.member_changes.empty());
  CHECK_FALSE(decode(sealed.payload).members_version);
  batch.step_version();
  batch.add({RoomEventKind::left, "bob", "bye", {}, false}, 1700000004);
  sealed = batch.seal();
  CHECK(decode(sealed.payload).members_version == std::optional<std::uint64_t>(4));

  // Dropped (Redis went away): nothing is left of it, the version stays.
  batch.add({RoomEventKind::joined, "carol", "", {}, false}, 1700000005);
  batch.add({RoomEventKind::message, "carol", "lost", {}, false}, 1700000005);
  batch.drop();
  CHECK(batch.empty());
  CHECK(batch.messages() == 0);
  CHECK(batch.version() == 5);
  batch.add_reclaim({"dave", "200-0000000b", std::string(mux::chat::kVerifierChars, 'a')});
  CHECK_FALSE(batch.empty());
  sealed = batch.seal();
  CHECK(sealed.member_changes.empty());
  REQUIRE(decode(sealed.payload).reclaims.size() == 1);
}

TEST_CASE("outgoing batch: the heartbeat's batch is the \"v\" line alone, or on top of events") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", kId, std::nullopt);
  mux::OutgoingBatch batch(kId, plain);
  batch.add({RoomEventKind::joined, "alice", "", {}, false}, 1700000000);
  batch.seal();
  batch.announce_version();
  CHECK_FALSE(batch.empty());
  auto sealed = batch.seal();
  CHECK(sealed.member_changes.empty());
  CHECK(sealed.messages() == 0);
  auto decoded = decode(sealed.payload);
  CHECK(decoded.events.empty());
  CHECK(decoded.members_version == std::optional<std::uint64_t>(1));
  CHECK(batch.empty());
  // With a message pending: one batch, the message and the "v" line; then plain again.
  batch.add({RoomEventKind::message, "alice", "hi", {}, false}, 1700000001);
  batch.announce_version();
  decoded = decode(batch.seal().payload);
  CHECK(decoded.events.size() == 1);
  CHECK(decoded.members_version == std::optional<std::uint64_t>(1));
  batch.add({RoomEventKind::message, "alice", "hi", {}, false}, 1700000002);
  CHECK_FALSE(decode(batch.seal().payload).members_version);
  // Dropped with the link: nothing to send.
  batch.announce_version();
  batch.drop();
  CHECK(batch.empty());
}

TEST_CASE("outgoing batch: a full batch asks to be sealed") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner plain(logger, "lobby", kId, std::nullopt);
  mux::OutgoingBatch batch(kId, plain);
  std::string text(1000, 'x');
  std::size_t added = 0;
  while (!batch.add({RoomEventKind::message, "alice", text, {}, false}, 1700000000))
    ++added;
  CHECK(added > mux::OutgoingBatch::kMaxBytes / 1100);
  CHECK(added < mux::OutgoingBatch::kMaxBytes / 1000);
}

TEST_CASE("outgoing batch: with a secret, the batch and every message are signed") {
  mux::Logger logger{mux::Verbosity::quiet};
  mux::RoomSigner signer(logger, "lobby", kId, mux::MessageMac("0123456789abcdef-room-secret"));
  mux::RoomSigner reader(logger, "lobby", "200-0000000b",
                         mux::MessageMac("0123456789abcdef-room-secret"));
  mux::OutgoingBatch batch(kId, signer);
  batch.add({RoomEventKind::joined, "alice", "", {}, false}, 1700000000);
  batch.add({RoomEventKind::message, "alice", "one", {}, false}, 1700000001);
  batch.add({RoomEventKind::message, "alice", "two", {}, false}, 1700000002);
  auto sealed = batch.seal();
  auto decoded = decode(sealed.payload);
  CHECK(decoded.sequence);
  CHECK(reader.batch_verified(decoded, sealed.payload));
  REQUIRE(sealed.member_changes.size() == 1);
  CHECK(reader.member_name(kId, sealed.member_changes[0].substr(1)) ==
        std::optional<std::string_view>("alice"));
  REQUIRE(sealed.messages() == 2);
  std::unordered_set<std::string> nonces;
  for (std::size_t i = 0; i < 2; ++i) {
    const auto* fields = &sealed.message_fields[i * 4];
    CHECK(reader.history_verified("0-1", fields[3], fields[0], fields[1], fields[2], nonces));
  }
}
