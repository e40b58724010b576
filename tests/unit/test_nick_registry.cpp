// NickRegistry: one nick per look-alike key here, and what it releases room-wide (through a
// bus that records what it is asked) and when it must not.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chat/chat_room.hpp"
#include "chat/nick_registry.hpp"
#include "chat/room_bus.hpp"

namespace {

struct Member final : mux::ChatMember {
  void deliver(const mux::Block& /*block*/) override {}
  void close_after_output() override {}
  void pause_input(std::chrono::milliseconds /*pause*/) override {}
};

// Records the claims and releases the registry makes.
struct RecordingBus final : mux::RoomBus {
  std::vector<std::string> claimed;
  std::vector<std::string> released;
  ClaimCallback pending;

  [[nodiscard]] bool connected() const override { return true; }
  void publish(const mux::chat::RoomEvent& /*event*/) override {}
  void publish_message(std::string_view /*name*/, std::string_view /*text*/) override {}
  void admit(std::size_t /*history*/, AdmitCallback /*done*/) override {}
  void claim_nick(const std::string& key, ClaimCallback done) override {
    claimed.push_back(key);
    pending = std::move(done);
  }
  void release_nick(const std::string& key) override { released.push_back(key); }
  void replay(std::uint64_t /*after*/, std::uint64_t /*up_to*/, ReplayCallback /*done*/) override {}
  [[nodiscard]] std::vector<std::string> remote_names() const override { return {}; }
  [[nodiscard]] std::size_t remote_count() const override { return 0; }
  [[nodiscard]] std::uint64_t highest_remote_number() const override { return 0; }
  std::vector<std::string> take_released() { return std::exchange(released, {}); }
};

using Keys = std::vector<std::string>;

}  // namespace

TEST_CASE("a nick and its look-alikes have one holder") {
  RecordingBus bus;
  mux::NickRegistry nicks(bus);
  Member alice;
  Member bob;
  CHECK(nicks.holder("alice") == nullptr);
  nicks.take(alice, std::nullopt, "alice");
  CHECK(nicks.holder("alice") == &alice);
  CHECK(nicks.holder("ALICE") == &alice);
  CHECK(nicks.holder("\u0430lice") == &alice);  // a Cyrillic "а"
  CHECK(nicks.holder("bob") == nullptr);
  CHECK(nicks.key("ALICE") == nicks.key("alice"));
  nicks.take(bob, std::nullopt, "bob");
  CHECK(nicks.size() == 2);
  Keys keys = nicks.keys();
  std::sort(keys.begin(), keys.end());
  Keys expected{nicks.key("alice"), nicks.key("bob")};
  std::sort(expected.begin(), expected.end());
  CHECK(keys == expected);
  CHECK(bus.released.empty());
  CHECK(bus.claimed.empty());  // taking is local: the room claims first when it must
}

TEST_CASE("a renamed holder frees its old nick room-wide, unless it only changed its look") {
  RecordingBus bus;
  mux::NickRegistry nicks(bus);
  Member member;
  nicks.take(member, std::nullopt, "alice");
  // Alice -> ALICE: the same key, which stays claimed room-wide.
  nicks.take(member, std::string_view("alice"), "ALICE");
  CHECK(bus.take_released().empty());
  CHECK(nicks.holder("alice") == &member);
  CHECK(nicks.size() == 1);
  // ALICE -> carol: alice's key is free, here and on the other servers.
  nicks.take(member, std::string_view("ALICE"), "carol");
  CHECK(bus.take_released() == Keys{nicks.key("alice")});
  CHECK(nicks.holder("alice") == nullptr);
  CHECK(nicks.holder("carol") == &member);
  // Its holder leaves.
  nicks.release("carol");
  CHECK(bus.take_released() == Keys{nicks.key("carol")});
  CHECK(nicks.holder("carol") == nullptr);
  CHECK(nicks.size() == 0);
}

TEST_CASE("a reclaimed nick passes to the successor without a room-wide release") {
  RecordingBus bus;
  mux::NickRegistry nicks(bus);
  Member ghost;
  Member successor;
  nicks.take(ghost, std::nullopt, "dave");
  nicks.hand_over("dave");
  CHECK(nicks.holder("dave") == nullptr);
  nicks.take(successor, std::nullopt, "dave");
  CHECK(nicks.holder("dave") == &successor);
  CHECK(bus.released.empty());
}

TEST_CASE("a claim answered after its member left is released only if granted and not held") {
  RecordingBus bus;
  mux::NickRegistry nicks(bus);
  std::optional<bool> answer;
  nicks.claim(nicks.key("erin"), [&answer](std::optional<bool> claimed) { answer = claimed; });
  REQUIRE(bus.claimed == Keys{nicks.key("erin")});
  bus.pending(true);
  CHECK(answer == std::optional<bool>(true));
  nicks.abandon_claim(nicks.key("erin"), false);  // refused: nothing to release
  CHECK(bus.released.empty());
  Member other;
  nicks.take(other, std::nullopt, "Erin");  // someone here holds it meanwhile
  nicks.abandon_claim(nicks.key("erin"), true);
  CHECK(bus.released.empty());
  nicks.abandon_claim(nicks.key("frank"), true);
  CHECK(bus.take_released() == Keys{nicks.key("frank")});
}

TEST_CASE("a nick's form and its look-alike rules are both checked") {
  RecordingBus bus;
  mux::NickRegistry nicks(bus);
  CHECK_FALSE(nicks.problem("alice").has_value());
  CHECK(nicks.problem("two words").has_value());  // form: chat::nick_problem
  CHECK(nicks.problem("Client 7").has_value());   // a default name
  CHECK(nicks.problem("CIient_7").has_value());   // a look-alike of one: NickRules
}

TEST_CASE("a registry moved to another bus releases through that one") {
  RecordingBus first;
  RecordingBus second;
  mux::NickRegistry nicks(first);
  Member member;
  nicks.take(member, std::nullopt, "gina");
  nicks.set_bus(second);
  nicks.release("gina");
  CHECK(first.released.empty());
  CHECK(second.take_released() == Keys{nicks.key("gina")});
}
