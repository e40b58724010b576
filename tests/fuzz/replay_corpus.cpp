// Replays every fuzz target's committed corpus (tests/fuzz/corpus/<target>/) through the same
// property checks the fuzzers run, without libFuzzer: part of the ordinary unit tests, so every
// input a fuzzer ever broke stays a regression test once its file is committed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "targets.hpp"

namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("fuzz corpora: every committed input keeps every property") {
  const std::filesystem::path corpus_root = MUX_FUZZ_CORPUS_DIR;
  for (const mux::fuzz::Target& target : mux::fuzz::kTargets) {
    std::filesystem::path folder = corpus_root / std::string(target.name);
    INFO("target: ", std::string(target.name));
    REQUIRE(std::filesystem::is_directory(folder));
    std::vector<std::filesystem::path> inputs;
    for (const auto& entry : std::filesystem::directory_iterator(folder))
      if (entry.is_regular_file()) inputs.push_back(entry.path());
    std::sort(inputs.begin(), inputs.end());
    CHECK(inputs.size() >= 3);  // seeds, so the fuzzer starts from real protocol text
    for (const std::filesystem::path& input : inputs) {
      INFO("input: ", input.string());
      std::string bytes = read_file(input);
      CHECK_NOTHROW(
          target.check(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
    }
  }
}

TEST_CASE("fuzz harness: a violated property is reported, not ignored") {
  // The checks are only worth something if a failing one stops the run.
  CHECK_THROWS_AS(FUZZ_CHECK(1 + 1 == 3, "arithmetic"), mux::fuzz::PropertyViolation);
  CHECK(mux::fuzz::is_valid_utf8("h\xC3\xA9llo"));
  CHECK_FALSE(mux::fuzz::is_valid_utf8("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(mux::fuzz::is_valid_utf8("\xED\xA0\x80"));      // a surrogate
  CHECK_FALSE(mux::fuzz::is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  CHECK_FALSE(mux::fuzz::is_valid_utf8("\xE2\x82"));          // cut short
}
