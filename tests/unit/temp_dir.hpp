// A scratch directory for unit tests that touch the file system: made under /tmp, emptied and
// removed when the TempDir goes away. Files are written and read whole; entries() lists what is
// there (without "." and ".."), so a test can say exactly which files an operation left behind.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace mux::testing {

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = "/tmp/mux-unit-test-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    for (const std::string& name : entries())
      ::unlink((path + "/" + name).c_str());
    ::rmdir(path.c_str());
  }
  [[nodiscard]] std::set<std::string> entries() const {
    std::set<std::string> names;
    DIR* dir = ::opendir(path.c_str());
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name != "." && name != "..") names.insert(name);
    }
    ::closedir(dir);
    return names;
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path + "/" + name, std::ios::binary) << text;
  }
  [[nodiscard]] std::string read(const std::string& name) const {
    std::ifstream in(path + "/" + name, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
};

}  // namespace mux::testing
