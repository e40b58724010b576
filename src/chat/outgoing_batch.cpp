#include "chat/outgoing_batch.hpp"

#include <utility>

#include "chat/room_signer.hpp"

namespace mux {

OutgoingBatch::OutgoingBatch(std::string server_id, RoomSigner& signer)
    : server_id_(std::move(server_id)), signer_(signer) {}

bool OutgoingBatch::add(const chat::RoomEvent& event, std::int64_t unix_seconds) {
  switch (event.kind) {
    case chat::RoomEventKind::joined:
      member_changes_.push_back("+" + signer_.member_entry(event.name));
      break;
    case chat::RoomEventKind::left:
      member_changes_.push_back("-" + signer_.member_entry(event.name));
      break;
    case chat::RoomEventKind::renamed:
      member_changes_.push_back("-" + signer_.member_entry(event.name));
      member_changes_.push_back("+" + signer_.member_entry(event.text));
      break;
    case chat::RoomEventKind::message:
      messages_.push_back(std::to_string(unix_seconds));
      messages_.push_back(event.name);
      messages_.push_back(event.text);
      break;
  }
  if (event.kind != chat::RoomEventKind::message) {
    ++version_;
    changes_members_ = true;
  }
  chat::encode_room_event(batch_, server_id_, event);
  return batch_.size() >= kMaxBytes;
}

void OutgoingBatch::add_reclaim(const chat::NickReclaim& reclaim) {
  chat::encode_reclaim(batch_, server_id_, reclaim);
}

OutgoingBatch::Sealed OutgoingBatch::seal() {
  Sealed sealed;
  if (changes_members_ || announce_version_) {
    chat::encode_members_version(batch_, server_id_, version_);
    sealed.member_changes = std::exchange(member_changes_, {});
    changes_members_ = false;
    announce_version_ = false;
  }
  // Signed last: the tag covers the "v" line too. The history signatures count on the sequence
  // number this gives the batch.
  signer_.sign_batch(batch_);
  sealed.payload = std::exchange(batch_, {});
  sealed.message_fields.reserve(messages_.size() / 3 * 4);
  for (std::size_t i = 0; i + 2 < messages_.size(); i += 3) {
    std::string signature =
        signer_.history_signature(i / 3, messages_[i], messages_[i + 1], messages_[i + 2]);
    sealed.message_fields.push_back(std::move(messages_[i]));
    sealed.message_fields.push_back(std::move(messages_[i + 1]));
    sealed.message_fields.push_back(std::move(messages_[i + 2]));
    sealed.message_fields.push_back(std::move(signature));
  }
  messages_.clear();
  return sealed;
}

void OutgoingBatch::drop() {
  batch_.clear();
  member_changes_.clear();
  messages_.clear();
  changes_members_ = false;
  announce_version_ = false;
}

}  // namespace mux
