// The libFuzzer entry point, compiled once per target with -DMUX_FUZZ_TARGET=<name>.
#include <cstddef>
#include <cstdint>

#include "targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mux::fuzz::MUX_FUZZ_TARGET::check_one_input(data, size);
  return 0;
}
