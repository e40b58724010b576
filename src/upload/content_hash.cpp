#include "upload/content_hash.hpp"

#include <xxhash.h>

#include <fmt/format.h>

#include <new>

namespace mux {

void ContentHash::StateDeleter::operator()(XXH3_state_s* state) const noexcept {
  XXH3_freeState(state);
}

ContentHash::ContentHash() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  XXH3_128bits_reset(state_.get());
}

ContentHash::ContentHash(ContentHash&&) noexcept = default;
ContentHash& ContentHash::operator=(ContentHash&&) noexcept = default;
ContentHash::~ContentHash() = default;

void ContentHash::update(const void* data, std::size_t length) {
  if (length > 0) XXH3_128bits_update(state_.get(), data, length);
}

std::string ContentHash::hex() const {
  XXH128_canonical_t canonical{};
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state_.get()));
  std::string text;
  text.reserve(2 * sizeof canonical.digest);
  for (unsigned char byte : canonical.digest)
    text += fmt::format("{:02x}", byte);
  return text;
}

}  // namespace mux
