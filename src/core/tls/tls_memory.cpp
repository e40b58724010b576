#include "core/tls/tls_memory.hpp"

#include <malloc.h>
#include <openssl/crypto.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace mux {

BufferSlots::BufferSlots(std::size_t slot_size, std::size_t slots, std::size_t kept_ready)
    : slot_size_(slot_size), slots_(slots), kept_ready_(kept_ready) {
  // Reserved, not committed: only the pages a buffer touches become resident.
  void* base = ::mmap(nullptr, slot_size_ * slots_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base != MAP_FAILED) base_ = static_cast<char*>(base);
  ready_.reserve(kept_ready_);
}

BufferSlots::~BufferSlots() {
  if (base_ != nullptr) ::munmap(base_, slot_size_ * slots_);
}

void* BufferSlots::take() {
  if (base_ == nullptr) return nullptr;
  std::lock_guard lock(mutex_);
  std::uint32_t slot = 0;
  if (!ready_.empty()) {
    slot = ready_.back();
    ready_.pop_back();
  } else if (!empty_.empty()) {
    slot = empty_.back();
    empty_.pop_back();
  } else if (never_used_ < slots_) {
    slot = never_used_++;
  } else {
    return nullptr;
  }
  return base_ + std::size_t{slot} * slot_size_;
}

void BufferSlots::give_back(void* pointer) {
  auto offset = static_cast<std::size_t>(static_cast<char*>(pointer) - base_);
  auto slot = static_cast<std::uint32_t>(offset / slot_size_);
  std::lock_guard lock(mutex_);
  if (ready_.size() < kept_ready_) {
    ready_.push_back(slot);
    return;
  }
  // Past the few kept warm: the pages go back to the kernel now (they read as zeros next time).
  ::madvise(base_ + std::size_t{slot} * slot_size_, slot_size_, MADV_DONTNEED);
  empty_.push_back(slot);
}

std::size_t BufferSlots::in_use() const {
  std::lock_guard lock(mutex_);
  // Every slot ever handed out is in use, ready or empty.
  return never_used_ - ready_.size() - empty_.size();
}

std::size_t BufferSlots::ready() const {
  std::lock_guard lock(mutex_);
  return ready_.size();
}

namespace {

// OpenSSL's allocator hooks are plain functions without a user pointer, so the slots they use
// are process-wide: set once by install_tls_buffer_slots() before OpenSSL allocates anything,
// and never destroyed (OpenSSL may still free a buffer while the process exits).
BufferSlots* tls_slots = nullptr;

constexpr std::size_t kTlsSlots = 16384;  // 384 MiB of address space; beyond that, malloc
constexpr std::size_t kTlsSlotsKeptReady = 32;
constexpr std::size_t kPage = 4096;

bool pooled(std::size_t size) {
  // A page exactly: the handshake's BIO buffer halves (OpenSSL's own long-lived objects are
  // not page-sized, and a slot would cost them whole pages).
  return size == kPage || (size >= kTlsSlotMinimum && size <= kTlsSlotSize);
}

void* tls_malloc(std::size_t size, const char* /*file*/, int /*line*/) {
  if (pooled(size)) {
    if (void* slot = tls_slots->take()) return slot;
  }
  return std::malloc(size);
}

void tls_free(void* pointer, const char* /*file*/, int /*line*/) {
  if (tls_slots->owns(pointer)) return tls_slots->give_back(pointer);
  std::free(pointer);
}

void* tls_realloc(void* pointer, std::size_t size, const char* file, int line) {
  if (pointer == nullptr) return tls_malloc(size, file, line);
  if (size == 0) {
    tls_free(pointer, file, line);
    return nullptr;
  }
  if (tls_slots->owns(pointer)) {
    if (size <= kTlsSlotSize) return pointer;
    void* grown = std::malloc(size);
    if (grown == nullptr) return nullptr;
    std::memcpy(grown, pointer, kTlsSlotSize);
    tls_slots->give_back(pointer);
    return grown;
  }
  if (pooled(size)) {
    // A handshake buffer growing into slot sizes moves out of the heap.
    if (void* slot = tls_slots->take()) {
      std::memcpy(slot, pointer, std::min(::malloc_usable_size(pointer), size));
      std::free(pointer);
      return slot;
    }
  }
  return std::realloc(pointer, size);
}

}  // namespace

bool install_tls_buffer_slots() {
  if (tls_slots != nullptr) return true;
  // Placement into static storage: never destroyed, see tls_slots.
  alignas(BufferSlots) static unsigned char storage[sizeof(BufferSlots)];
  auto* slots = new (storage) BufferSlots(kTlsSlotSize, kTlsSlots, kTlsSlotsKeptReady);
  if (!slots->usable()) {
    slots->~BufferSlots();
    return false;
  }
  tls_slots = slots;
  if (CRYPTO_set_mem_functions(tls_malloc, tls_realloc, tls_free) == 1) return true;
  // OpenSSL allocated already: its own allocator stays.
  tls_slots = nullptr;
  slots->~BufferSlots();
  return false;
}

}  // namespace mux
