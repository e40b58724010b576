// FlushList: the items (writers with output queued) waiting for the end of the current batch of
// events, each listed at most once however often it is added. The event loop drains it when the
// batch's events and timers are done, so a connection that got N sends in one batch makes one
// write, not N, and listing it costs a push_back: no callback or allocation per send.
//
// An item keeps its place in an Entry it owns, so removing it (it is being destroyed, or it wrote
// on its own) is O(1) and the drain never touches a destroyed item. Pure bookkeeping, no I/O.
#pragma once

#include <cstddef>
#include <vector>

namespace mux {

template <class T>
class FlushList {
 public:
  // Where an item stands in the list; lives inside the item, updated only by the list.
  class Entry {
   public:
    Entry() = default;
    // An entry belongs to one item at one address: copying it would list a stale pointer.
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;
    [[nodiscard]] bool listed() const noexcept { return index_ != kUnlisted; }

   private:
    friend class FlushList;
    static constexpr std::size_t kUnlisted = static_cast<std::size_t>(-1);
    std::size_t index_ = kUnlisted;
  };

  // Lists `item` unless `entry` says it already is.
  void add(T& item, Entry& entry) {
    if (entry.listed()) return;
    entry.index_ = slots_.size();
    slots_.push_back(Slot{&item, &entry});
    ++listed_;
  }

  // Unlists the item of `entry`; a no-op when it is not listed.
  void remove(Entry& entry) noexcept {
    if (!entry.listed()) return;
    slots_[entry.index_] = Slot{};
    entry.index_ = Entry::kUnlisted;
    --listed_;
  }

  // Calls fn(item) once for every listed item, in the order they were first listed, unlisting
  // each just before its call. Items listed during the drain (by fn or what it sets off) are
  // called in this same drain; items removed during it are skipped.
  template <class Fn>
  void drain(Fn&& fn) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      Slot slot = slots_[i];
      if (slot.item == nullptr) continue;
      slots_[i] = Slot{};
      slot.entry->index_ = Entry::kUnlisted;
      --listed_;
      fn(*slot.item);
    }
    // clear() keeps the capacity: the next batches reuse it without allocating.
    slots_.clear();
  }

  [[nodiscard]] bool empty() const noexcept { return listed_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return listed_; }

 private:
  struct Slot {
    T* item = nullptr;
    Entry* entry = nullptr;
  };
  std::vector<Slot> slots_;  // in listing order; removed items leave an empty slot
  std::size_t listed_ = 0;
};

}  // namespace mux
