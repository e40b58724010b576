// ChunkReader: the client's read-ahead thread. Chunks come out in order with the file's bytes,
// the hash covers exactly them, and a file that is shorter than promised is reported.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/loop/fd.hpp"
#include "upload/chunk_reader.hpp"
#include "upload/content_hash.hpp"

namespace {

mux::Fd file_with(const std::string& bytes) {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  REQUIRE(std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size());
  std::fflush(file);
  mux::Fd fd(::dup(::fileno(file)));
  std::fclose(file);  // the dup keeps the unnamed file alive
  return fd;
}

std::string pattern(std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i)
    bytes[i] = static_cast<char>((i * 7919) >> 3);
  return bytes;
}

// Takes every chunk, waiting on ready_fd() the way the event loop does.
std::string drain(mux::ChunkReader& reader, std::size_t expected) {
  std::string got;
  while (got.size() < expected) {
    std::optional<std::string_view> chunk = reader.front();
    if (!chunk) {
      if (!reader.failure().empty()) break;
      mux::Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
      epoll_event event{};
      event.events = EPOLLIN;
      REQUIRE(::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, reader.ready_fd(), &event) == 0);
      REQUIRE(::epoll_wait(epoll.get(), &event, 1, 5000) == 1);
      reader.clear_ready();
      continue;
    }
    got.append(chunk->data(), chunk->size());
    reader.pop_front();
  }
  return got;
}

std::string hash_of(const std::string& bytes) {
  mux::ContentHash hash;
  hash.update(bytes.data(), bytes.size());
  return hash.hex();
}

}  // namespace

TEST_CASE("chunks come out in order and the hash covers exactly the bytes read") {
  std::string bytes = pattern((9 << 20) + 12345);  // more chunks than slots, a partial last one
  mux::Fd file = file_with(bytes);
  mux::ChunkReader reader(file.get(), 0, bytes.size());
  CHECK(drain(reader, bytes.size()) == bytes);
  CHECK(reader.failure().empty());
  CHECK(reader.hash_hex() == hash_of(bytes));
}

TEST_CASE("reading starts at the offset") {
  std::string bytes = pattern(5000);
  mux::Fd file = file_with(bytes);
  mux::ChunkReader reader(file.get(), 1000, 4000);
  CHECK(drain(reader, 4000) == bytes.substr(1000));
  CHECK(reader.hash_hex() == hash_of(bytes.substr(1000)));
}

TEST_CASE("an empty upload reads nothing") {
  mux::Fd file = file_with("");
  mux::ChunkReader reader(file.get(), 0, 0);
  CHECK_FALSE(reader.front());
  CHECK(reader.hash_hex() == hash_of(""));
}

TEST_CASE("a file shorter than promised is reported") {
  std::string bytes = pattern(3 << 20);
  mux::Fd file = file_with(bytes);
  mux::ChunkReader reader(file.get(), 0, bytes.size() + 10);
  CHECK(drain(reader, bytes.size() + 10) == bytes);
  CHECK(reader.failure() == "the file got shorter while it was being sent");
}

TEST_CASE("a reader destroyed before its chunks were taken stops its thread") {
  std::string bytes = pattern(8 << 20);
  mux::Fd file = file_with(bytes);
  mux::ChunkReader reader(file.get(), 0, bytes.size());
  REQUIRE(drain(reader, 1 << 20).size() >= (1u << 20));
  // Leaving the scope joins the thread, which is blocked waiting for a free slot.
}

TEST_CASE("a stream is read until its end, then at_end() says so") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  mux::Fd read_end(fds[0]);
  std::string bytes = pattern(50000);
  {
    mux::Fd write_end(fds[1]);
    REQUIRE(::write(write_end.get(), bytes.data(), bytes.size()) ==
            static_cast<ssize_t>(bytes.size()));
  }
  mux::ChunkReader reader(read_end.get(), 0, std::nullopt);
  CHECK(drain(reader, bytes.size()) == bytes);
  for (int round = 0; round < 500 && !reader.at_end(); ++round)
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  CHECK(reader.at_end());
  CHECK(reader.failure().empty());
  CHECK(reader.hash_hex() == hash_of(bytes));
}

TEST_CASE("stopping does not wait for a pipe whose writer stays silent") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  mux::Fd read_end(fds[0]);
  mux::Fd write_end(fds[1]);
  REQUIRE(::write(write_end.get(), "abc", 3) == 3);
  {
    mux::ChunkReader reader(read_end.get(), 0, std::nullopt);
    CHECK(drain(reader, 3) == "abc");
    CHECK_FALSE(reader.at_end());
  }  // returns although the pipe is still open and empty
}
