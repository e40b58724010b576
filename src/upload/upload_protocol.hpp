// MUXUP/1, the upload wire protocol, as pure functions shared by upload-server and upload-client:
// the optional header line `MUXUP/1 <size> <name>[ <key>=<value>]...\n` (size `-`: a stream of
// unknown length), the percent-encoding of the name, the
// reply `OK <bytes> <xxh3-128 hex>[ <key>=<value>]...\n` / `ERR <reason>\n`, and the rules that
// turn a name a client chose into a file name that is safe to create. No I/O here, so it is
// unit-tested alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mux {

// A stream that starts with these 8 bytes carries a header; any other stream is a raw upload.
inline constexpr std::string_view kUploadMagic = "MUXUP/1 ";
// The whole header line, magic and '\n' included, may not be longer than this.
inline constexpr std::size_t kMaxHeaderLine = 4096;
// Longest file name the server creates; leaves room for a ".N" suffix within NAME_MAX (255).
inline constexpr std::size_t kMaxStoredName = 200;

// `key=value` fields after a header's name or a reply's hash, in order, as sent (no decoding).
using ProtocolFields = std::vector<std::pair<std::string, std::string>>;

// The header field by which a client asks for the saved name in the OK reply (`reply-name=1`).
// Only on request, so a client older than the field never sees a reply it would refuse.
inline constexpr std::string_view kReplyNameField = "reply-name";

// Resumable uploads (see README "Resuming interrupted uploads"): the header field
// `resume=<upload key>` (32 lowercase hex digits, random, kept by the client) asks the server to
// keep a partial upload bound to that key; the data follows at once, from byte 0. A client that
// tried before adds `resume-ask=1`: the server then answers at once with
// `RESUME <offset> <xxh3-128 of the first offset bytes>\n` (offset 0 when it has nothing to
// continue), and the client sends `FROM <offset>\n` (the offered offset, or 0 to start over) and
// the file from there. Only a header with both fields and a known size takes these two extra
// lines, so raw uploads, clients without the fields and a first attempt against an older server
// see the protocol unchanged.
inline constexpr std::string_view kResumeField = "resume";
inline constexpr std::string_view kResumeAskField = "resume-ask";
inline constexpr std::size_t kUploadKeyLength = 32;
// The longest `FROM <offset>` line, '\n' included, a server reads.
inline constexpr std::size_t kMaxFromLine = 32;

// Honest progress: a header with `ack=1` asks the server to say how much of the upload it holds
// safely, with lines `ACK <offset>\n` before the reply: one as soon as the data may flow (0, or
// the offset a resumed upload continues from), then about every MiB (for a resumable upload
// saved to --output-dir, each checkpoint once it is written, after the data is flushed with
// --sync full; otherwise the bytes received and stored). Only on request: raw uploads and older
// clients never see the line.
inline constexpr std::string_view kAckField = "ack";

// Completed but unconfirmed uploads (see README "Resuming interrupted uploads"): a header with
// `confirm=1` tells the server the client will say it read its reply. The server then keeps a
// small completion record of what it saved (a single upload: per resume= key; a batch: one log
// per `batch-key=<upload key>`, the same in every header of the batch) and adds `confirm=1` to
// the OK. A client that reads such an OK sends the line `DONE\n` (a single upload: after its
// OK, then it half-closes; a batch: after its last reply, before its half-close) and the server
// removes the record. Only when DONE never comes (the client killed, the connection cut after
// the commit) does the record stay, until --keep-partial: a later try with the same key is then
// offered the whole file (`RESUME <size> <hash>`; a batch member that arrives again with the
// same path, size and hash is not saved twice) instead of saving it again as name.1.
inline constexpr std::string_view kConfirmField = "confirm";
inline constexpr std::string_view kBatchKeyField = "batch-key";
inline constexpr std::string_view kDoneLine = "DONE\n";
std::string format_ack(std::uint64_t offset);
// One line without its '\n'; nullopt when it is not `ACK <offset>`.
std::optional<std::uint64_t> parse_ack(std::string_view line);

// Several files on one connection (upload-client with a directory or --file given more than
// once): every header carries `batch=1`. Its name is then a relative path (`dir/sub/file`,
// percent-encoded), kept under --output-dir, and after this upload's reply the server reads the
// next header on the same connection; the client sends the headers and data back to back
// without waiting (replies come in order, one per header) and half-closes after the last.
// `dir=1` (size 0) makes the directory the path names (an empty directory is kept). Each path
// is checked before anything is created: check_relative_path() below; a bad one is refused
// with `ERR bad path: <why>` and the connection ends. A server older than the field saves the
// first file under its last component, replies once and closes: the client says so.
inline constexpr std::string_view kBatchField = "batch";
inline constexpr std::string_view kDirField = "dir";
// The longest relative path a batch may name, in bytes.
inline constexpr std::size_t kMaxRelativePath = 1024;
// Why `path` may not be stored as it is (an absolute path, an empty, `.` or `..` component, a
// component of more than kMaxStoredName bytes or one the file-name sanitizer would change: a
// control, bidi or invisible character, ill-formed UTF-8; a name of the server's own temporary
// files, `.mux-...`; longer than kMaxRelativePath); empty when it is fine.
std::string check_relative_path(std::string_view path);
// One header of a batch, '\n' included: batch=1 with the other fields as format_header_line()
// makes them; `directory` sends `dir=1` (the size is then 0).
// A non-empty `batch_key` adds `batch-key=KEY confirm=1` (not to a directory).
std::string format_batch_header(std::uint64_t size, std::string_view path, std::string_view token,
                                std::string_view resume_key, bool ask_offset, bool want_acks,
                                bool directory, std::string_view batch_key = {});

struct ResumeOffer {
  std::uint64_t offset = 0;
  std::string prefix_hash;  // 32 lowercase hex digits
};

// 32 lowercase hex digits.
[[nodiscard]] bool valid_upload_key(std::string_view key);
std::string format_resume_offer(std::uint64_t offset, std::string_view prefix_hash);
// One line without its '\n'; nullopt when it is not `RESUME <offset> <hash>`.
std::optional<ResumeOffer> parse_resume_offer(std::string_view line);
std::string format_resume_from(std::uint64_t offset);
// One line without its '\n'; nullopt when it is not `FROM <offset>`.
std::optional<std::uint64_t> parse_resume_from(std::string_view line);

struct UploadHeader {
  std::optional<std::uint64_t> size;  // nullopt: `-`, the upload ends at the client's half-close
  std::string name;                   // percent-decoded, not yet sanitized
  // The key=value fields after the name, in order, as sent (no decoding). Unknown keys are
  // collected and ignored, so a newer client can add fields an older server does not know.
  ProtocolFields fields;

  // The value of field `key`, or nullptr when the header has none.
  [[nodiscard]] const std::string* field(std::string_view key) const;
};

struct HeaderParse {
  std::optional<UploadHeader> header;
  std::string error;  // why the line is not a header, when `header` is empty
};

// Parses one header line without its '\n' (a trailing '\r' is tolerated), magic included.
// Fields are separated by single spaces; a field without '=' or with an empty key, or a key given
// twice, makes the header bad.
HeaderParse parse_header_line(std::string_view line);
// The header line a client sends, '\n' included; a size of nullopt sends `-` (unknown length).
// A non-empty `token` (--token-file: printable, no spaces) goes in a `token=` field;
// `want_saved_name` adds `reply-name=1`.
// A non-empty `resume_key` adds `resume=KEY`, and `ask_offset` then `resume-ask=1` (a known size
// only).
// `want_acks` adds `ack=1` (ACK lines before the reply); `confirm` adds `confirm=1` (with a
// resume key only).
std::string format_header_line(std::optional<std::uint64_t> size, std::string_view name,
                               std::string_view token = {}, bool want_saved_name = false,
                               std::string_view resume_key = {}, bool ask_offset = false,
                               bool want_acks = false, bool confirm = false);
// Whether `header` asks for a RESUME offer (resume=, resume-ask=1 and a known size).
[[nodiscard]] bool asks_resume_offer(const struct UploadHeader& header);

// Leaves A-Z a-z 0-9 - . _ ~ as they are and writes every other byte as %XX, so a name never
// contains a space, a newline or a byte a terminal would interpret.
std::string percent_encode(std::string_view text);
// Decodes %XX escapes; a '%' not followed by two hex digits is kept as it is.
std::string percent_decode(std::string_view text);

// Turns a client's name into a plain file name: only the part after the last '/', sanitized by
// core/base/sanitize.hpp (controls, C1, bidi and invisible characters and ill-formed UTF-8 each
// become
// '_'), leading dots removed, cut to kMaxStoredName bytes (never inside a UTF-8
// sequence). Returns `fallback` when nothing usable is left ("", ".", "..", "/").
std::string sanitize_file_name(std::string_view name, std::string_view fallback);
// The name a raw upload (or a header with an unusable name) is stored under.
std::string raw_upload_name(std::uint64_t client_number);

struct UploadReply {
  bool ok = false;
  std::uint64_t bytes = 0;  // OK only
  std::string hash;         // OK only: 32 lowercase hex digits
  std::string reason;       // ERR only
  // OK only: the `name=` field, percent-decoded: the name the server saved the file under (in
  // its --output-dir), sent when the header asked with reply-name=1. Other fields are ignored,
  // so a newer server can add fields an older client does not know.
  std::optional<std::string> saved_name;
  // OK only: `confirm=1`, the server keeps a completion record until the client sends DONE.
  bool confirm = false;
};

// A non-empty `saved_name` goes in a `name=` field, percent-encoded; `confirm` adds `confirm=1`.
std::string format_ok_reply(std::uint64_t bytes, std::string_view hash,
                            std::string_view saved_name = {}, bool confirm = false);
std::string format_err_reply(std::string_view reason);
// A server's reply line as a client may show it on a terminal: its first 300 bytes, control
// bytes as '?'.
std::string printable_reply(std::string_view text);
// Parses one reply line without its '\n'; nullopt when it is neither a valid OK nor an ERR.
std::optional<UploadReply> parse_reply_line(std::string_view line);
// An ERR reason another try may not meet (--retry): the server was busy, stopping, or timed the
// upload out (a resumable upload's data was kept). Everything else (disk full, too large,
// unauthorized, a bad header or path) would be refused again.
[[nodiscard]] bool transient_refusal(std::string_view reason);
// ERR busy: an earlier connection of the same upload (its key) or batch (its batch-key) is
// still being received or saved; it ends soon, so upload-client waits and tries again even
// without --retry.
inline constexpr std::string_view kUploadBusyReason =
    "busy: this upload is in progress on another connection";
inline constexpr std::string_view kBatchBusyReason =
    "busy: this batch is in progress on another connection";
[[nodiscard]] bool busy_refusal(std::string_view reason);

}  // namespace mux
