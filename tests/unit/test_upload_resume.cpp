// Resumable uploads without sockets: the RESUME/FROM lines and the resume= field, the checkpoint
// record (round trip, and refusal of anything torn or foreign), the hash state carried across a
// checkpoint, the checkpoint schedule, and the partial claimed, cut back, locked and continued in
// a real directory.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "temp_dir.hpp"
#include "upload/completion_log.hpp"
#include "upload/content_hash.hpp"
#include "upload/resume_record.hpp"
#include "upload/upload_protocol.hpp"
#include "upload/upload_store.hpp"

namespace {

constexpr std::string_view kKey = "00112233445566778899aabbccddeeff";

std::string hash_of(std::string_view text) {
  mux::ContentHash hash;
  hash.update(text.data(), text.size());
  return hash.hex();
}

mux::ResumeRecord sample_record() {
  mux::ContentHash hash;
  hash.update("hello", 5);
  return mux::ResumeRecord{1000, "report 1.pdf", mux::sha256_hex(kKey), "", 5, hash.save(), {}};
}

}  // namespace

TEST_CASE("resume: the offer and FROM lines round-trip, and bad ones are refused") {
  std::string offer = mux::format_resume_offer(760, hash_of("x"));
  CHECK(offer == "RESUME 760 " + hash_of("x") + "\n");
  auto parsed = mux::parse_resume_offer(std::string_view(offer).substr(0, offer.size() - 1));
  REQUIRE(parsed);
  CHECK(parsed->offset == 760);
  CHECK(parsed->prefix_hash == hash_of("x"));
  CHECK_FALSE(mux::parse_resume_offer("RESUME 760"));
  CHECK_FALSE(mux::parse_resume_offer("RESUME x " + hash_of("x")));
  CHECK_FALSE(mux::parse_resume_offer("RESUME 1 ABCDEF"));
  CHECK(mux::format_resume_from(42) == "FROM 42\n");
  CHECK(mux::parse_resume_from("FROM 42") == 42u);
  CHECK(mux::parse_resume_from("FROM 0\r") == 0u);
  CHECK_FALSE(mux::parse_resume_from("FROM -1"));
  CHECK_FALSE(mux::parse_resume_from("FROM "));
  CHECK_FALSE(mux::parse_resume_from("from 1"));
}

TEST_CASE("resume: the header carries resume= only with a known size") {
  CHECK(mux::format_header_line(10, "a.bin", {}, true, kKey) ==
        "MUXUP/1 10 a.bin reply-name=1 resume=" + std::string(kKey) + "\n");
  CHECK(mux::format_header_line(10, "a.bin", {}, false, kKey, true) ==
        "MUXUP/1 10 a.bin resume=" + std::string(kKey) + " resume-ask=1\n");
  CHECK(mux::format_header_line(std::nullopt, "a.bin", {}, false, kKey) == "MUXUP/1 - a.bin\n");
  CHECK(mux::valid_upload_key(kKey));
  CHECK_FALSE(mux::valid_upload_key("00112233445566778899AABBCCDDEEFF"));
  CHECK_FALSE(mux::valid_upload_key("0011"));
}

TEST_CASE("ack: the ACK line round-trips, is asked for with ack=1, and bad ones are refused") {
  CHECK(mux::format_ack(1048576) == "ACK 1048576\n");
  CHECK(mux::parse_ack("ACK 1048576") == 1048576u);
  CHECK(mux::parse_ack("ACK 0\r") == 0u);
  CHECK_FALSE(mux::parse_ack("ACK "));
  CHECK_FALSE(mux::parse_ack("ACK -1"));
  CHECK_FALSE(mux::parse_ack("ack 1"));
  CHECK_FALSE(mux::parse_ack("ACK 1 2"));
  CHECK(mux::format_header_line(10, "a.bin", {}, true, kKey, false, true) ==
        "MUXUP/1 10 a.bin reply-name=1 resume=" + std::string(kKey) + " ack=1\n");
  CHECK(mux::format_header_line(std::nullopt, "s", {}, false, {}, false, true) ==
        "MUXUP/1 - s ack=1\n");
}

TEST_CASE("resume: a record round-trips and a damaged one is refused") {
  mux::ResumeRecord record = sample_record();
  std::string encoded = mux::encode_resume_record(record);
  CHECK(mux::decode_resume_record(encoded) == record);
  // A shorter record written over a longer one leaves the old tail: ignored.
  CHECK(mux::decode_resume_record(encoded + "state=00\ncheck=junk\n") == record);
  for (std::size_t at : {std::size_t{3}, encoded.size() / 2, encoded.size() - 3}) {
    std::string damaged = encoded;
    damaged[at] = damaged[at] == '1' ? '2' : '1';
    CHECK_FALSE(mux::decode_resume_record(damaged));
  }
  CHECK_FALSE(mux::decode_resume_record(encoded.substr(0, encoded.size() / 2)));
  CHECK_FALSE(mux::decode_resume_record(""));
  record.offset = record.size + 1;  // a record past its own size is not one
  CHECK_FALSE(mux::decode_resume_record(mux::encode_resume_record(record)));
}

TEST_CASE("resume: a saved hash state continues to the hash of the whole") {
  std::string data(3 << 20, '\0');
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<char>(i * 131 + i / 977);
  for (std::size_t cut :
       {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{1 << 20}, data.size() - 7}) {
    mux::ContentHash first;
    first.update(data.data(), cut);
    std::optional<mux::ContentHash> restored = mux::ContentHash::restore(first.save());
    REQUIRE(restored);
    CHECK(restored->hex() == first.hex());
    restored->update(data.data() + cut, data.size() - cut);
    CHECK(restored->hex() == hash_of(data));
  }
  std::string saved = mux::ContentHash().save();
  CHECK_FALSE(mux::ContentHash::restore(saved.substr(1)));
  saved[0] = static_cast<char>(saved[0] + 1);  // another libxxhash version
  CHECK_FALSE(mux::ContentHash::restore(saved));
}

TEST_CASE("resume: checkpoints fall due at each interval") {
  CHECK(mux::next_checkpoint(0) == mux::kCheckpointInterval);
  CHECK(mux::next_checkpoint(1) == mux::kCheckpointInterval);
  CHECK(mux::next_checkpoint(mux::kCheckpointInterval) == 2 * mux::kCheckpointInterval);
  CHECK(mux::next_checkpoint(mux::kCheckpointInterval + 5) == 2 * mux::kCheckpointInterval);
}

TEST_CASE("resume: a claimed partial is locked, cut back to its checkpoint and continued") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  mux::ResumeRecord wanted{10, "f.bin", mux::sha256_hex(kKey), "", 0, {}, {}};
  {
    std::optional<mux::ResumeClaim> claim = dir.claim_resumable(wanted);
    REQUIRE(claim);
    CHECK(claim->offset == 0);
    CHECK_FALSE(dir.claim_resumable(wanted));  // held: a second connection waits
    REQUIRE(claim->file.append("hello, wor", 10) == 0);
    mux::ContentHash hash;
    hash.update("hello", 5);
    mux::ResumeRecord record = wanted;
    record.offset = 5;
    record.hash_state = hash.save();
    CHECK(mux::write_resume_checkpoint(claim->file.fd(), claim->record.get(),
                                       mux::encode_resume_record(record),
                                       mux::SyncMode::none) == 0);
  }
  CHECK(temp.entries().size() == 2);  // kept for the uploader: data and record
  std::optional<mux::ResumeClaim> again = dir.claim_resumable(wanted);
  REQUIRE(again);
  CHECK(again->offset == 5);
  CHECK(again->hash.hex() == hash_of("hello"));
  REQUIRE(again->file.append("XYZ", 3) == 0);  // continues at the checkpoint, not after "wor"
  mux::SuffixHints hints;
  CHECK(again->file.commit("f.bin", hints) == "f.bin");
  CHECK(temp.read("f.bin") == "helloXYZ");
  CHECK(temp.entries() == std::set<std::string>{"f.bin"});  // the record went with the commit
}

TEST_CASE("resume: another key, token, size or name starts over") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  mux::ResumeRecord wanted{10, "f.bin", mux::sha256_hex(kKey), "", 0, {}, {}};
  auto keep_five = [&](const mux::ResumeRecord& owner) {
    std::optional<mux::ResumeClaim> claim = dir.claim_resumable(owner);
    REQUIRE(claim);
    REQUIRE(claim->file.restart() == 0);
    REQUIRE(claim->file.append("hello", 5) == 0);
    mux::ContentHash hash;
    hash.update("hello", 5);
    mux::ResumeRecord record = owner;
    record.offset = 5;
    record.hash_state = hash.save();
    REQUIRE(mux::write_resume_checkpoint(claim->file.fd(), claim->record.get(),
                                         mux::encode_resume_record(record),
                                         mux::SyncMode::none) == 0);
  };
  mux::ResumeRecord other = wanted;
  other.token_hash = mux::sha256_hex("another token");
  keep_five(wanted);
  CHECK(dir.claim_resumable(other)->offset == 0);
  keep_five(wanted);
  other = wanted;
  other.size = 11;
  CHECK(dir.claim_resumable(other)->offset == 0);
  keep_five(wanted);
  other = wanted;
  other.name = "g.bin";
  CHECK(dir.claim_resumable(other)->offset == 0);
  keep_five(wanted);
  other = wanted;
  other.key_hash = mux::sha256_hex("ffeeddccbbaa99887766554433221100");
  CHECK(dir.claim_resumable(other)->offset == 0);  // another partial altogether
  CHECK(dir.claim_resumable(wanted)->offset == 5);
}

TEST_CASE("resume: a saved upload leaves a completion record that answers its key only") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  mux::ResumeRecord wanted{5, "f.bin", mux::sha256_hex(kKey), "", 0, {}, {}};
  CHECK_FALSE(dir.find_completed(wanted));
  {
    std::optional<mux::ResumeClaim> claim = dir.claim_resumable(wanted);
    REQUIRE(claim);
    REQUIRE(claim->file.append("hello", 5) == 0);
    mux::ContentHash hash;
    hash.update("hello", 5);
    mux::ResumeRecord done = wanted;
    done.offset = 5;
    done.hash_state = hash.save();
    claim->file.set_completion(done);
    mux::SuffixHints hints;
    CHECK(claim->file.commit("f.bin", hints) == "f.bin");
  }
  std::optional<mux::ResumeRecord> found = dir.find_completed(wanted);
  REQUIRE(found);
  CHECK(found->saved_as == "f.bin");
  CHECK(found->offset == 5);
  CHECK(mux::ContentHash::restore(found->hash_state)->hex() == hash_of("hello"));
  // The round trip keeps the name; a partial's record (no name) still decodes as before.
  CHECK(mux::decode_resume_record(mux::encode_resume_record(*found)) == found);
  CHECK(mux::decode_resume_record(mux::encode_resume_record(sample_record())) == sample_record());
  mux::ResumeRecord other = wanted;
  other.token_hash = mux::sha256_hex("another token");
  CHECK_FALSE(dir.find_completed(other));
  other = wanted;
  other.size = 6;
  CHECK_FALSE(dir.find_completed(other));
  // Expired with --keep-partial, and swept.
  dir.set_keep_partial(std::chrono::seconds{0});
  ::sleep(1);
  CHECK_FALSE(dir.find_completed(wanted));
  (void)dir.remove_expired_resumables();
  CHECK(temp.entries() == std::set<std::string>{"f.bin"});
}

TEST_CASE("resume: a batch's completion log is read back by the same key and token only") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  std::string key = mux::sha256_hex(kKey);
  {
    mux::CompletionLog log(dir.fd(), key, "");
    CHECK(log.find("a/b c") == nullptr);
    log.add("a/b c", {5, hash_of("hello"), "a/b c.1"});
    log.add("d", {0, hash_of(""), "d"});
  }
  CHECK(temp.entries() == std::set<std::string>{mux::CompletionLog::file_name(key)});
  {
    mux::CompletionLog again(dir.fd(), key, "");
    REQUIRE(again.find("a/b c") != nullptr);
    CHECK(again.find("a/b c")->size == 5);
    CHECK(again.find("a/b c")->hash == hash_of("hello"));
    CHECK(again.find("a/b c")->saved_as == "a/b c.1");
    CHECK(again.find("d") != nullptr);
  }
  CHECK(mux::CompletionLog(dir.fd(), key, mux::sha256_hex("token")).find("d") == nullptr);
  // A line cut short by a crash is not read, and the next entry is not glued to it.
  int fd = ::openat(dir.fd(), mux::CompletionLog::file_name(key).c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "7 abc", 5) == 5);
  ::close(fd);
  {
    mux::CompletionLog cut(dir.fd(), key, "");
    cut.add("e", {1, hash_of("x"), "e"});
  }
  mux::CompletionLog read(dir.fd(), key, "");
  CHECK(read.find("e") != nullptr);
  CHECK(read.find("d") != nullptr);
  read.remove();
  CHECK(temp.entries().empty());
}

TEST_CASE("resume: a batch's completion log is held by one connection at a time") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  std::string key = mux::sha256_hex(kKey);
  {
    mux::CompletionLog first(dir.fd(), key, "");
    CHECK_FALSE(first.held_elsewhere());
    // The same batch again while the first connection may still save files: refused (ERR busy),
    // without reading a log the first one is still adding to.
    CHECK(mux::CompletionLog(dir.fd(), key, "").held_elsewhere());
    CHECK_FALSE(mux::CompletionLog(dir.fd(), mux::sha256_hex("another key"), "").held_elsewhere());
    first.add("a", {5, hash_of("hello"), "a"});
  }
  {
    mux::CompletionLog second(dir.fd(), key, "");
    CHECK_FALSE(second.held_elsewhere());
    CHECK(second.find("a") != nullptr);  // what the first one saved
    second.remove();                     // DONE: removed while still held
    CHECK(temp.entries().empty());
    CHECK_FALSE(mux::CompletionLog(dir.fd(), key, "").held_elsewhere());
  }
  // Made only to be locked, nothing added: nothing left behind.
  { mux::CompletionLog idle(dir.fd(), key, ""); }
  CHECK(temp.entries().empty());
}

TEST_CASE("resume: a new try meets ERR busy while a commit of the same upload names the file") {
  mux::testing::TempDir temp;
  mux::OutputDirectory dir(temp.path, mux::SyncMode::none);
  mux::ResumeRecord wanted{5, "f.bin", mux::sha256_hex(kKey), "", 0, {}, {}};
  std::optional<mux::ResumeClaim> claim = dir.claim_resumable(wanted);
  REQUIRE(claim);
  REQUIRE(claim->file.append("hello", 5) == 0);
  mux::ContentHash hash;
  hash.update("hello", 5);
  mux::ResumeRecord done = wanted;
  done.offset = 5;
  done.hash_state = hash.save();
  claim->file.set_completion(done);
  // The commit's rename, before its completion record: the data's name is free again, but the
  // connection still holds the record (its session keeps it until the commit ends).
  std::string data_name;
  for (const std::string& name : temp.entries())
    if (name.ends_with(".part")) data_name = name;
  REQUIRE(::renameat(dir.fd(), data_name.c_str(), dir.fd(), "f.bin") == 0);
  CHECK_FALSE(dir.claim_resumable(wanted));  // busy, not a fresh empty partial beside the commit
  CHECK(temp.entries().count(data_name) == 0);  // and the empty one it made is gone again
  claim.reset();
  std::optional<mux::ResumeClaim> after = dir.claim_resumable(wanted);
  REQUIRE(after);
  CHECK(after->offset == 0);
}

TEST_CASE("resume: OK carries confirm=1 only when asked, and headers ask with confirm=1") {
  CHECK(mux::format_ok_reply(3, hash_of("abc"), "a b", true) ==
        "OK 3 " + hash_of("abc") + " name=a%20b confirm=1\n");
  std::optional<mux::UploadReply> reply =
      mux::parse_reply_line("OK 3 " + hash_of("abc") + " confirm=1");
  REQUIRE(reply);
  CHECK(reply->confirm);
  CHECK_FALSE(mux::parse_reply_line("OK 3 " + hash_of("abc"))->confirm);
  CHECK(mux::format_header_line(10, "f", {}, false, kKey, true, false, true) ==
        std::string("MUXUP/1 10 f resume=") + std::string(kKey) + " resume-ask=1 confirm=1\n");
  CHECK(mux::format_batch_header(1, "d/f", {}, {}, false, false, false, kKey) ==
        std::string("MUXUP/1 1 d%2Ff reply-name=1 batch=1 batch-key=") + std::string(kKey) +
            " confirm=1\n");
}
