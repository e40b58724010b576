// libxxh3_off.so: an LD_PRELOAD shim that turns mux's XXH3-128 into a no-op, so bench/run can
// measure an upload with and without hashing end to end (mux has no switch for it, on purpose).
// Loaded into both upload-client and upload-server: both then report the same constant digest,
// so the client's verification still passes (the byte count is checked as usual). Never use it
// outside the benchmark: it makes every "verified" hash meaningless.
#include <xxhash.h>

#include <cstddef>

extern "C" {

XXH_errorcode XXH3_128bits_update(XXH3_state_t* /*state*/, const void* /*input*/,
                                  std::size_t /*length*/) {
  return XXH_OK;
}

XXH128_hash_t XXH3_128bits_digest(const XXH3_state_t* /*state*/) {
  return XXH128_hash_t{0, 0};
}

}  // extern "C"
