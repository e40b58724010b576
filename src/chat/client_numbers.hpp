// ClientNumbers: the "Client N" numbers a server of a Redis room hands its newcomers. They come
// from the room's counter (INCRBY) in blocks, so a server admits at its accept rate, not at one
// Redis round trip per newcomer: a quiet room asks for one number per newcomer (its numbers then
// stay in arrival order across servers); newcomers who still wait when a block comes double the
// next one, up to kMaxBlock; a block that lasts over a second halves it. While newcomers keep
// coming, the next block is asked for before this one runs out (the spare block).
// While Redis is out of reach a server numbers newcomers from what it holds, then from
// RoomBus::kOwnNumbersFrom up, in its own slot's residue modulo kOutageStride. The slot is the
// room's "slots" counter taken once per server (INCR at its first connection): servers that lose
// Redis together (a stalled or restarted Redis) or one after the other hand out disjoint
// numbers, and the counter never reaches them (issue 25: a 200,000-client run gave one name
// twice when every server took "the next above what it knew"; ranges placed just above the
// counter met the counter's later blocks at 300,000). Two live servers share a slot only after
// kOutageStride server starts in one room.
// No I/O: the bus asks the counter and hands over what it answers.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace mux {

class ClientNumbers {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::uint64_t kMaxBlock = 1024;
  static constexpr std::uint64_t kOutageStride = 4096;

  [[nodiscard]] std::uint64_t in_hand() const noexcept {
    return (block_end_ + 1 - next_) + (spare_end_ + 1 - spare_next_);
  }
  // The next number in hand; only when in_hand() > 0.
  std::uint64_t take();
  // Busy (blocks of more than one) and less than half a block left: time to ask for the next.
  [[nodiscard]] bool running_low() const noexcept {
    return block_size_ > 1 && in_hand() < block_size_ / 2;
  }
  // How many numbers to ask the counter for now.
  std::uint64_t block_to_ask(Clock::time_point now);
  // The counter answered `end` to an INCRBY of `size`: numbers end - size + 1 to end are ours.
  void received(std::uint64_t end, std::uint64_t size);
  // Newcomers still wait after a block came: the next one is twice as big.
  void grow() noexcept;
  // Redis (re)connected: numbers in hand were reserved in a Redis that may have restarted empty
  // since, where another server may be handed them, so they are dropped.
  void drop() noexcept;
  // The room's "slots" counter as this server took it.
  void set_slot(std::uint64_t slots) noexcept { slot_ = slots % kOutageStride; }
  [[nodiscard]] bool has_slot() const noexcept { return slot_.has_value(); }
  // While Redis is out of reach: a number in hand, else the next in this server's slot above the
  // last one it gave (nullopt before it has a slot).
  std::optional<std::uint64_t> outage_number();

 private:
  // Numbers in hand: next_ to block_end_, then the block asked for ahead of time, spare_next_ to
  // spare_end_ (each empty when next is end + 1).
  std::uint64_t next_ = 1;
  std::uint64_t block_end_ = 0;
  std::uint64_t spare_next_ = 1;
  std::uint64_t spare_end_ = 0;
  std::uint64_t block_size_ = 1;
  Clock::time_point asked_at_{};
  std::optional<std::uint64_t> slot_;
  std::uint64_t last_outage_number_ = 0;  // 0: none yet
};

}  // namespace mux
