// Where OpenSSL's large, short-lived buffers live. Each TLS connection borrows about 63 KiB while
// its handshake runs (a 16.3 KiB record read buffer, a 16.2 KiB write buffer, a handshake message
// buffer grown to 21.3 KiB, two 4 KiB BIO halves) and gives them back right after, while the
// ~14 KiB it keeps (the SSL object, its session, the cipher contexts) is allocated in between.
// From the heap, a crowd of handshakes leaves the kept pieces scattered through the freed ones:
// glibc cannot return those pages, and 10,000 idle TLS clients cost 19 KiB each instead of 16.
//
// BufferSlots serves such buffers from fixed slots in a mapping of their own (address space
// reserved once, pages touched only when used): a freed slot is kept ready for the next record
// (the most recent few, so a busy connection reuses warm pages) or its pages are given back to the
// kernel at once, and the heap holds only what connections keep.
//
// install_tls_buffer_slots() routes OpenSSL's allocations of those sizes through one process-wide
// BufferSlots; called by tls_context.cpp before the first SSL_CTX is made. Tests use BufferSlots
// directly with small sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace mux {

class BufferSlots {
 public:
  // `slot_size`: bytes per slot (a multiple of the page size); `slots`: how many the reserved
  // mapping holds; `kept_ready`: freed slots whose pages stay resident for reuse.
  BufferSlots(std::size_t slot_size, std::size_t slots, std::size_t kept_ready);
  BufferSlots(const BufferSlots&) = delete;
  BufferSlots& operator=(const BufferSlots&) = delete;
  ~BufferSlots();

  // False when the address space could not be reserved (a low RLIMIT_AS): then nothing is pooled.
  [[nodiscard]] bool usable() const noexcept { return base_ != nullptr; }
  [[nodiscard]] std::size_t slot_size() const noexcept { return slot_size_; }
  // A slot, or nullptr when all are taken (the caller falls back to malloc).
  void* take();
  // Gives a slot back; `pointer` must be one that owns() says is ours.
  void give_back(void* pointer);
  [[nodiscard]] bool owns(const void* pointer) const noexcept {
    auto address = reinterpret_cast<std::uintptr_t>(pointer);
    auto base = reinterpret_cast<std::uintptr_t>(base_);
    return base_ != nullptr && address >= base && address < base + slot_size_ * slots_;
  }

  // For tests and the log: slots in use, freed slots kept resident.
  [[nodiscard]] std::size_t in_use() const;
  [[nodiscard]] std::size_t ready() const;

 private:
  char* base_ = nullptr;
  std::size_t slot_size_;
  std::size_t slots_;
  std::size_t kept_ready_;
  mutable std::mutex mutex_;          // OpenSSL may allocate from any thread
  std::uint32_t never_used_ = 0;      // slots [never_used_, slots_) were never touched
  std::vector<std::uint32_t> ready_;  // freed, pages still resident: reused first (LIFO)
  std::vector<std::uint32_t> empty_;  // freed, pages given back
};

// OpenSSL allocations of at least this size, or of exactly one page, go to slots.
inline constexpr std::size_t kTlsSlotMinimum = 16 * 1024;
inline constexpr std::size_t kTlsSlotSize = 24 * 1024;

// Installs the slots as OpenSSL's allocator for large buffers. Idempotent; false (and nothing
// changes) when OpenSSL has already allocated memory, or the address space is not available.
bool install_tls_buffer_slots();

}  // namespace mux
