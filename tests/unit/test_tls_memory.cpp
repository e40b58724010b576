// BufferSlots: the slots OpenSSL's large buffers come from (core/tls/tls_memory.hpp), with small
// sizes.
#include <doctest/doctest.h>

#include <cstring>
#include <set>
#include <vector>

#include "core/tls/tls_memory.hpp"

using mux::BufferSlots;

TEST_CASE("slots are distinct, owned, and run out instead of growing") {
  BufferSlots slots(4096, 3, 1);
  REQUIRE(slots.usable());
  std::set<void*> taken;
  for (int i = 0; i < 3; ++i) {
    void* slot = slots.take();
    REQUIRE(slot != nullptr);
    CHECK(slots.owns(slot));
    std::memset(slot, 0xab, 4096);  // the whole slot is writable
    taken.insert(slot);
  }
  CHECK(taken.size() == 3);
  CHECK(slots.in_use() == 3);
  CHECK(slots.take() == nullptr);  // the caller falls back to malloc
  int on_stack = 0;
  std::vector<char> on_heap(16);
  CHECK_FALSE(slots.owns(&on_stack));
  CHECK_FALSE(slots.owns(on_heap.data()));
  for (void* slot : taken)
    slots.give_back(slot);
  CHECK(slots.in_use() == 0);
}

TEST_CASE("the last freed slot is reused warm; past the ones kept ready, pages go back") {
  BufferSlots slots(4096, 4, 1);
  REQUIRE(slots.usable());
  auto* first = static_cast<unsigned char*>(slots.take());
  auto* second = static_cast<unsigned char*>(slots.take());
  std::memset(first, 1, 4096);
  std::memset(second, 2, 4096);
  slots.give_back(first);   // kept ready, contents untouched
  slots.give_back(second);  // one is kept ready already: its pages are given back
  CHECK(slots.ready() == 1);
  auto* again = static_cast<unsigned char*>(slots.take());
  CHECK(again == first);
  CHECK(again[0] == 1);
  auto* released = static_cast<unsigned char*>(slots.take());
  CHECK(released == second);
  CHECK(released[0] == 0);  // a given-back page reads as zeros
  CHECK(released[4095] == 0);
  slots.give_back(again);
  slots.give_back(released);
}

TEST_CASE("OpenSSL runs on the slots in this process too") {
  // The unit tests made TLS contexts before (test_tls.cpp) or will: either way installing is
  // idempotent, and a refused install (OpenSSL allocated first) leaves OpenSSL working.
  bool installed = mux::install_tls_buffer_slots();
  CHECK(mux::install_tls_buffer_slots() == installed);
}
