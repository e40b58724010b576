// Reading a file that holds a secret (--token-file, --redis-password-file) the way ssh reads a
// private key: only a regular file (opened without blocking, so a FIFO at the path cannot freeze
// a start or a SIGHUP), only when neither group nor others may access it, only when it belongs to
// this user or root (either could have swapped the secret), and only up to a bound.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mux {

class SecretFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The whole file; throws SecretFileError "FLAG PATH: why" when it is refused or unreadable.
std::string read_secret_file(std::string_view flag, const std::string& path, std::size_t max_bytes);

}  // namespace mux
