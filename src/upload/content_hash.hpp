// ContentHash: the XXH3-128 of a byte stream, fed piece by piece as the bytes pass through. Owns
// one libxxhash state. Used by the upload server (per connection) and the upload client (per
// file); hex() is the same text `xxhsum -H2` prints, so a saved file can be checked by hand.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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

  // The streaming state as bytes, to continue the hash later (a resumable upload's checkpoint)
  // without reading the data again: libxxhash's XXH3_state_t is a plain struct (the default
  // secret leaves its one pointer null). Prefixed with the library version and the struct's
  // size, so a state saved by another build is refused rather than misread.
  [[nodiscard]] std::string save() const;
  // nullopt when `saved` is not what save() of this build wrote.
  static std::optional<ContentHash> restore(std::string_view saved);

 private:
  struct StateDeleter {
    void operator()(XXH3_state_s* state) const noexcept;
  };
  std::unique_ptr<XXH3_state_s, StateDeleter> state_;
};

}  // namespace mux
