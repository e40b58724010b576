#include "chat/client_numbers.hpp"

#include <algorithm>
#include <utility>

#include "chat/room_bus.hpp"

namespace mux {

std::uint64_t ClientNumbers::take() {
  if (block_end_ + 1 == next_) {
    next_ = std::exchange(spare_next_, 1);
    block_end_ = std::exchange(spare_end_, 0);
  }
  return next_++;
}

std::uint64_t ClientNumbers::block_to_ask(Clock::time_point now) {
  if (now - asked_at_ > std::chrono::seconds(1))
    block_size_ = std::max<std::uint64_t>(1, block_size_ / 2);
  asked_at_ = now;
  return block_size_;
}

void ClientNumbers::received(std::uint64_t end, std::uint64_t size) {
  if (block_end_ + 1 == next_) {
    next_ = end - size + 1;
    block_end_ = end;
  } else {
    spare_next_ = end - size + 1;
    spare_end_ = end;
  }
}

void ClientNumbers::grow() noexcept {
  block_size_ = std::min(block_size_ * 2, kMaxBlock);
}

void ClientNumbers::drop() noexcept {
  next_ = spare_next_ = 1;
  block_end_ = spare_end_ = 0;
}

std::optional<std::uint64_t> ClientNumbers::outage_number() {
  if (in_hand() > 0) return take();
  if (!slot_) return std::nullopt;
  std::uint64_t number = std::max(last_outage_number_ + 1, RoomBus::kOwnNumbersFrom);
  number += (*slot_ + kOutageStride - number % kOutageStride) % kOutageStride;
  last_outage_number_ = number;
  return number;
}

}  // namespace mux
