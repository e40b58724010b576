// libxxh3_off.so: an LD_PRELOAD shim that turns mux's XXH3-128 into a no-op, so bench/run can
// measure an upload with and without hashing end to end (mux has no switch for it, on purpose).
// Both update entry points are replaced: the baseline one and the runtime-dispatching one mux
// calls where libxxhash exports it (3ac2e83). Loaded into both upload-client and upload-server:
// both then report the same constant digest, so the client's verification still passes (the byte
// count is checked as usual). Never use it outside the benchmark: every "verified" hash is void.
#if defined(__x86_64__) || defined(__i386__)
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
#endif
#include <xxhash.h>

#include <cstddef>

extern "C" {

XXH_errorcode XXH3_128bits_update(XXH3_state_t* /*state*/, const void* /*input*/,
                                  std::size_t /*length*/) {
  return XXH_OK;
}

#if defined(__x86_64__) || defined(__i386__)
XXH_errorcode XXH3_128bits_update_dispatch(XXH3_state_t* /*state*/, const void* /*input*/,
                                           std::size_t /*length*/) {
  return XXH_OK;
}
#endif

XXH128_hash_t XXH3_128bits_digest(const XXH3_state_t* /*state*/) {
  return XXH128_hash_t{0, 0};
}

}  // extern "C"
