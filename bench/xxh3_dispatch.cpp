// libxxh3_dispatch.so: an LD_PRELOAD shim that routes mux's XXH3_128bits_update to the
// runtime-dispatching XXH3_128bits_update_dispatch that libxxhash also exports (AVX2/AVX-512
// instead of the baseline SSE2 code). The hash value is identical; only the speed changes.
// bench/run uses it to show what mux would gain by calling the dispatching entry point itself.
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include <cstddef>

extern "C" XXH_errorcode XXH3_128bits_update(XXH3_state_t* state, const void* input,
                                             std::size_t length) {
  return XXH3_128bits_update_dispatch(state, input, length);
}
