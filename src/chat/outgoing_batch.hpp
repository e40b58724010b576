// OutgoingBatch: what this server of a Redis room tells the others in one loop batch, and its
// member-set version. Events of a loop batch travel as one Redis message (fewer PUBLISHes, one
// signature); it is sealed when the batch ends or reaches kMaxBytes. Sealing adds the lines the
// others need to trust and place it: a "v" line (the member-set version after its joins, leaves
// and renames) and, with --room-secret-file, the "s" line; it also gives the member-set changes
// for kMembersScript (written to Redis before the batch goes out, so a server that hears the
// events and then reads the set sees them) and each message's fields for kPublishScript (which
// numbers them and keeps them in the history stream). No I/O: the bus sends what `seal` returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "chat/room_event.hpp"

namespace mux {

class RoomSigner;

class OutgoingBatch {
 public:
  // A batch's events are sealed at the latest at this size.
  static constexpr std::size_t kMaxBytes = 256 * 1024;

  struct Sealed {
    std::string payload;  // the batch, with its "v" and "s" lines
    // "+ENTRY" (joined) / "-ENTRY" (left), in order, for kMembersScript; empty when the batch
    // changes no member (then the script is not run).
    std::vector<std::string> member_changes;
    // Per message: its time (unix seconds), name, text and signature ("" without a secret).
    std::vector<std::string> message_fields;
    [[nodiscard]] std::size_t messages() const noexcept { return message_fields.size() / 4; }
  };

  OutgoingBatch(std::string server_id, RoomSigner& signer);

  // Adds one event of this server; true when the batch is full (seal it now).
  bool add(const chat::RoomEvent& event, std::int64_t unix_seconds);
  // A "k" line: a nick taken from its ghost on another server (chat/room_event.hpp).
  void add_reclaim(const chat::NickReclaim& reclaim);
  [[nodiscard]] bool empty() const noexcept { return batch_.empty() && !announce_version_; }
  // The messages added since the last seal (they are lost when the batch is dropped).
  [[nodiscard]] std::size_t messages() const noexcept { return messages_.size() / 3; }
  Sealed seal();
  // Redis went out of reach: nothing of it is sent (the version stays).
  void drop();

  // This server's member-set version: one step per join, leave and rename.
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }
  // A step with no event (a re-sync writes the whole set): the others see the gap and read it.
  void step_version() noexcept { ++version_; }
  // The next seal carries the "v" line even with no member change (the heartbeat's batch).
  void announce_version() noexcept { announce_version_ = true; }

 private:
  std::string server_id_;
  RoomSigner& signer_;
  std::string batch_;
  std::uint64_t version_ = 0;
  std::vector<std::string> member_changes_;
  std::vector<std::string> messages_;  // time, name, text of each
  bool changes_members_ = false;
  bool announce_version_ = false;
};

}  // namespace mux
