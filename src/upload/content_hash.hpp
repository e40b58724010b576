// ContentHash: the XXH3-128 of a byte stream, fed piece by piece as the bytes pass through. Owns
// one libxxhash state. Used by the upload server (per connection) and the upload client (per
// file); hex() is the same text `xxhsum -H2` prints, so a saved file can be checked by hand.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

struct XXH3_state_s;

namespace mux {

class ContentHash {
 public:
  ContentHash();
  ContentHash(ContentHash&&) noexcept;
  ContentHash& operator=(ContentHash&&) noexcept;
  ~ContentHash();

  void update(const void* data, std::size_t length);
  // 32 lowercase hex digits, most significant byte first (XXH128 canonical form).
  [[nodiscard]] std::string hex() const;

 private:
  struct StateDeleter {
    void operator()(XXH3_state_s* state) const noexcept;
  };
  std::unique_ptr<XXH3_state_s, StateDeleter> state_;
};

}  // namespace mux
