// hash_speed: what XXH3-128 costs per byte on this machine, for bench/run's "XXH3 cost" row.
// mux upload-server has no switch to turn hashing off, so the cost is measured directly: the same
// streaming XXH3_128bits_update over the same chunk size a server would feed it, over a buffer
// that stays in cache (the upload's bytes are hot too: they were just copied out of the socket).
// Prints one JSON object: bytes hashed, seconds, GB/s (best of --repeat runs).
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

int main(int argc, char** argv) {
  std::uint64_t total = std::uint64_t{1} << 30;  // 1 GiB
  std::size_t chunk = 256 * 1024;
  int repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view flag = argv[i];
    std::uint64_t value = std::strtoull(argv[i + 1], nullptr, 10);
    if (flag == "--bytes")
      total = std::max<std::uint64_t>(value, 1);
    else if (flag == "--chunk")
      chunk = std::max<std::size_t>(value, 1);
    else if (flag == "--repeat")
      repeat = std::max(static_cast<int>(value), 1);
    else {
      fmt::print(stderr, "usage: hash_speed [--bytes N] [--chunk N] [--repeat N]\n");
      return 2;
    }
  }
  std::vector<unsigned char> buffer(chunk);
  for (std::size_t i = 0; i < buffer.size(); ++i) {
    buffer[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  }
  double best = 1e300;
  XXH128_hash_t digest{};
  for (int r = 0; r < repeat; ++r) {
    XXH3_state_t* state = XXH3_createState();
    if (state == nullptr) return 1;
    XXH3_128bits_reset(state);
    auto start = std::chrono::steady_clock::now();
    for (std::uint64_t done = 0; done < total; done += chunk) {
      auto len = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - done));
      XXH3_128bits_update(state, buffer.data(), len);
    }
    digest = XXH3_128bits_digest(state);
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    XXH3_freeState(state);
  }
  fmt::print(
      "{{\"bytes\":{},\"chunk\":{},\"repeat\":{},\"seconds\":{:.6f},\"gb_per_s\":{:.3f},"
      "\"xxhash_version\":{},\"digest_low\":\"{:016x}\"}}\n",
      total, chunk, repeat, best, static_cast<double>(total) / best / 1e9, XXH_versionNumber(),
      digest.low64);
  return 0;
}
