#include "upload/content_hash.hpp"

#ifdef MUX_HAVE_XXH3_DISPATCH
// Only the *_dispatch names are wanted: without this the header renames every call to them.
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
#endif
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
  if (length == 0) return;
#ifdef MUX_HAVE_XXH3_DISPATCH
  // The same hash, computed with AVX2/AVX-512 when the CPU has them instead of baseline SSE2:
  // measured 190 instead of 240 ms of server CPU per GiB uploaded, 259 instead of 299 ms on the
  // client.
  XXH3_128bits_update_dispatch(state_.get(), data, length);
#else
  XXH3_128bits_update(state_.get(), data, length);
#endif
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
