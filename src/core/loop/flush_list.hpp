// FlushList: the items (writers with output queued) waiting for the end of the current batch of
// events, each listed at most once however often it is added. The event loop drains it when the
// batch's events and timers are done, so a connection that got N sends in one batch makes one
// write, not N, and listing it costs a push_back: no callback or allocation per send.
//
// A drain may stop part way (drain_while): the rest keep their place, ahead of items listed
// later. The loop does that when a huge list takes long to write, so that it looks at its fds in
// between: a line that arrives meanwhile joins the queues of the writers still listed, which then
// write both lines in one go (issue 25).
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
    drain_while(fn, [] { return true; });
  }

  // drain(), but after each call asks more() whether to go on; when it says no, the items not
  // called yet stay listed, in their order. Returns true when the list is empty.
  template <class Fn, class More>
  bool drain_while(Fn&& fn, More&& more) {
    while (head_ < slots_.size()) {
      Slot slot = slots_[head_];
      slots_[head_++] = Slot{};
      if (slot.item == nullptr) continue;
      slot.entry->index_ = Entry::kUnlisted;
      --listed_;
      fn(*slot.item);
      if (head_ < slots_.size() && !more()) break;
    }
    if (head_ == slots_.size()) {
      // clear() keeps the capacity: the next batches reuse it without allocating.
      slots_.clear();
      head_ = 0;
      return true;
    }
    if (head_ * 2 >= slots_.size()) compact();  // amortized: each slot moves O(1) times
    return false;
  }

  [[nodiscard]] bool empty() const noexcept { return listed_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return listed_; }

 private:
  struct Slot {
    T* item = nullptr;
    Entry* entry = nullptr;
  };

  // Drops the slots before head_ (all drained), so a list drained part by part does not grow.
  void compact() noexcept {
    std::size_t kept = 0;
    for (std::size_t i = head_; i < slots_.size(); ++i) {
      if (slots_[i].item == nullptr) continue;
      slots_[i].entry->index_ = kept;
      slots_[kept++] = slots_[i];
    }
    slots_.resize(kept);
    head_ = 0;
  }

  std::vector<Slot> slots_;  // in listing order; removed items leave an empty slot
  std::size_t head_ = 0;     // slots_[head_..] are still to be drained
  std::size_t listed_ = 0;
};

}  // namespace mux
