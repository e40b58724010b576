// RoomSigner: everything --room-secret-file (issue 21) changes in a Redis room, in one place.
// This server signs what it writes for the others, and checks what it reads from Redis before
// the room sees it, because anyone who can write to that Redis could otherwise speak as a
// member, replay a batch, poison the history, squat a nick or register a ghost server:
//   batches           an "s" line: a sequence number that rises per server (its clock in
//                     microseconds, or a little past it) and the tag of the bytes before it;
//                     a batch not newer than its sender's last is a replay
//   history entries   field s: a nonce unique to the message and its tag; a nonce seen twice in
//                     one answer is a copy
//   nick holders      "ID TAG": the tag binds the server id to the nick key
//   registrations     "<unix ms> <version> <tag>", rewritten by every heartbeat, taken for
//                     kRegistrationWindow
//   member entries    "TAG NAME" in members:<id>; versions "VERSION TAG"
// Without a secret each call is the identity: values are written bare and everything read
// passes, so the bus never asks whether the room has a secret. What fails verification is
// dropped by the caller and logged here, one line a second at most, naming the room and the
// likely cause. No I/O but the log.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "chat/room_event.hpp"
#include "core/access/message_mac.hpp"

namespace mux {

class Logger;

class RoomSigner {
 public:
  using Clock = std::chrono::steady_clock;
  // A batch from a server not heard in this long is a replay, whatever it says; a server heard
  // from is remembered twice as long, so its old batches stay refused after it went quiet.
  static constexpr std::chrono::minutes kReplayWindow{5};
  static constexpr std::chrono::minutes kForgetServerAfter{2 * kReplayWindow};
  // A registration is taken for this long after it was written: it is rewritten at every
  // heartbeat, and the servers' clocks may differ by up to this much.
  static constexpr std::chrono::seconds kRegistrationWindow{60};

  RoomSigner(Logger& logger, std::string room_name, std::string server_id,
             std::optional<MessageMac> mac);

  [[nodiscard]] bool signs() const noexcept { return mac_.has_value(); }

  // What this server writes.
  [[nodiscard]] std::string member_entry(std::string_view name) const;
  [[nodiscard]] std::string version(std::uint64_t version) const;
  [[nodiscard]] std::string nick_holder(std::string_view nick_key) const;
  // "" without a secret (the heartbeat then writes none).
  [[nodiscard]] std::string registration(std::uint64_t version) const;
  // Ends `batch` with its "s" line, under a new sequence number.
  void sign_batch(std::string& batch);
  // Message `index` of the batch signed last: "<nonce> <tag>" ("" without a secret).
  [[nodiscard]] std::string history_signature(std::size_t index, std::string_view time,
                                              std::string_view name, std::string_view text) const;

  // What the others wrote; false / nullopt means: drop it (logged).
  // A batch signed by a server of the room and newer than its sender's last (then remembered).
  bool batch_verified(const chat::RoomBatch& batch, std::string_view payload);
  // A history entry (stream id `id`, its fields t, n, m and s), not a copy of one among
  // `nonces` (the entries read before in the same answer).
  bool history_verified(std::string_view id, std::string_view signature, std::string_view time,
                        std::string_view name, std::string_view text,
                        std::unordered_set<std::string>& nonces);
  // The name in one member entry of server `id`.
  std::optional<std::string_view> member_name(std::string_view id, std::string_view entry);
  // The version text in server `id`'s versions value.
  std::optional<std::string_view> version_text(std::string_view id, std::string_view value);
  // Whether the holder value found for a nick may stand (its server signed it).
  bool holder_verified(std::string_view nick_key, std::string_view holder);
  // The member-set version of a server the heartbeat listed: without a secret the one in
  // versions (`version_value`), else the one in its signed, recent registration (nullopt:
  // unsigned, forged or stale; it then does not count as a server of the room).
  std::optional<std::uint64_t> listed_version(const std::string& id, std::string_view version_value,
                                              std::string_view registration);
  // Forgets the servers not heard from for kForgetServerAfter (the heartbeat calls it).
  void forget_quiet(Clock::time_point now);

 private:
  void report(std::string_view what, std::string_view detail);

  Logger& logger_;
  std::string room_name_;
  std::string server_id_;
  std::optional<MessageMac> mac_;
  std::uint64_t last_sequence_ = 0;  // of this server's last batch
  // Per server a verified batch came from: its last sequence number, and when it was heard
  // (or listed by a heartbeat with a signed registration).
  struct Heard {
    std::uint64_t sequence = 0;
    Clock::time_point at{};
  };
  std::unordered_map<std::string, Heard> heard_;
  std::size_t dropped_ = 0;  // since the last log line about them
  Clock::time_point logged_{};
};

}  // namespace mux
