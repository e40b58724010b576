// ResumeRecord: what the upload server keeps beside a partial upload so that the uploader can
// continue it later, even after the server restarted: the announced size, the name, whom it
// belongs to (hashes of the upload key and of the token), the checkpoint offset and the XXH3
// streaming state at that offset. The server never re-reads the partial's data: it cuts the data
// back to the checkpoint and continues the hash from the saved state. Encoded as a few text lines
// ending with a checksum, so a torn or foreign file is refused, never misread. Pure: unit-tested
// alone; ResumeStore does the I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/access/access_tokens.hpp"  // sha256_hex: what a record keeps of a key or token

namespace mux {

// Data beyond the last checkpoint is sent again after an interruption: this bounds it (and the
// server's work per checkpoint is one small write, with --sync full one flush off the loop).
inline constexpr std::uint64_t kCheckpointInterval = 1 << 20;

struct ResumeRecord {
  std::uint64_t size = 0;    // the size the header announced
  std::string name;          // the sanitized name the upload will be saved under
  std::string key_hash;      // SHA-256 of the upload key, hex
  std::string token_hash;    // SHA-256 of the token, hex; empty when tokens are off
  std::uint64_t offset = 0;  // bytes of data the hash state covers; the data is cut back to it
  std::string hash_state;    // ContentHash::save() at offset
  // A completed upload's record (offset == size): the name it was saved under, relative to
  // --output-dir. Empty in a partial's record.
  std::string saved_as;

  bool operator==(const ResumeRecord&) const = default;
};

std::string encode_resume_record(const ResumeRecord& record);
// nullopt for anything encode_resume_record() did not write (bad checksum, torn, another version).
std::optional<ResumeRecord> decode_resume_record(std::string_view text);

// The next offset at which a checkpoint is due after one at `offset`.
[[nodiscard]] constexpr std::uint64_t next_checkpoint(std::uint64_t offset) noexcept {
  return offset - offset % kCheckpointInterval + kCheckpointInterval;
}

}  // namespace mux
