// hash_speed: what XXH3-128 costs per byte on this machine, for bench/run's XXH3 rows. The same
// streaming XXH3_128bits_update over the same chunk size a server feeds it, over a buffer that
// stays in cache (an upload's bytes are hot too: they were just copied out of the socket).
// Measures the plain entry point mux calls (XXH3_128bits_update: the library's baseline SSE2 code)
// and the runtime-dispatching one libxxhash also exports (XXH3_128bits_update_dispatch: AVX2 or
// AVX-512 when the CPU has them), so the table shows what switching would gain.
// Prints one JSON object: bytes hashed, best seconds of --repeat runs, GB/s.
// Without this, the dispatch header #defines XXH3_128bits_update to the dispatching version and
// both measurements would be of the same function.
#define XXH_DISPATCH_DISABLE_REPLACE 1
#include <xxh_x86dispatch.h>  // the *_dispatch entry points (x86 builds of libxxhash)
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace {

using Update = XXH_errorcode (*)(XXH3_state_t*, const void*, std::size_t);

double best_seconds(Update update, const std::vector<unsigned char>& buffer, std::uint64_t total,
                    int repeat) {
  double best = 1e300;
  for (int r = 0; r < repeat; ++r) {
    XXH3_state_t* state = XXH3_createState();
    if (state == nullptr) std::exit(1);
    XXH3_128bits_reset(state);
    auto start = std::chrono::steady_clock::now();
    for (std::uint64_t done = 0; done < total; done += buffer.size()) {
      auto len = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), total - done));
      update(state, buffer.data(), len);
    }
    (void)XXH3_128bits_digest(state);
    auto elapsed = std::chrono::steady_clock::now() - start;
    best = std::min(best, std::chrono::duration<double>(elapsed).count());
    XXH3_freeState(state);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t total = std::uint64_t{1} << 30;  // 1 GiB
  std::size_t chunk = 256 * 1024;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    std::uint64_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--bytes") {
      total = std::max<std::uint64_t>(value, 1);
    } else if (flag == "--chunk") {
      chunk = std::max<std::size_t>(value, 1);
    } else if (flag == "--repeat") {
      repeat = std::max(static_cast<int>(value), 1);
    } else {
      fmt::print(stderr, "usage: hash_speed [--bytes N] [--chunk N] [--repeat N]\n");
      return 2;
    }
  }
  std::vector<unsigned char> buffer(chunk);
  for (std::size_t i = 0; i < buffer.size(); ++i) {
    buffer[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  }
  double plain = best_seconds(&XXH3_128bits_update, buffer, total, repeat);
  double dispatch = best_seconds(&XXH3_128bits_update_dispatch, buffer, total, repeat);
  auto rate = [&](double seconds) { return static_cast<double>(total) / seconds / 1e9; };
  fmt::print(
      "{{\"bytes\":{},\"chunk\":{},\"repeat\":{},\"seconds\":{:.6f},\"gb_per_s\":{:.3f},"
      "\"dispatch_seconds\":{:.6f},\"dispatch_gb_per_s\":{:.3f},\"xxhash_version\":{}}}\n",
      total, chunk, repeat, plain, rate(plain), dispatch, rate(dispatch), XXH_versionNumber());
  return 0;
}
