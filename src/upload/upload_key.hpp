// UploadKey: the random key by which upload-client proves, on a later run, that a partial upload
// on the server is its own. One small file per (server, file) under $XDG_STATE_HOME/mux/
// (default ~/.local/state/mux/), mode 600 in a 700 directory; created at the first attempt,
// removed once the server confirmed the upload, so the next upload of the same file is new.
#pragma once

#include <optional>
#include <string>

namespace mux {

struct UploadKey {
  std::string key;      // 32 lowercase hex digits
  std::string path;     // the file that keeps it
  bool reused = false;  // read from an earlier run (false: created now)
};

// The state directory: $XDG_STATE_HOME/mux, else $HOME/.local/state/mux; nullopt when neither
// variable is set (absolute).
std::optional<std::string> upload_key_directory();

// The key for uploading the file `file_fd` as `name` to `server` ("host:port"): the file is told
// by its device and inode, so a rename keeps it and another file of the same name does not.
// Throws std::runtime_error "upload key in DIR: reason" when the directory cannot be used.
UploadKey upload_key_for(const std::string& server, int file_fd, const std::string& name);

// Removes the key's file (the upload is complete); a failure changes nothing worth telling.
void forget_upload_key(const UploadKey& key);

}  // namespace mux
