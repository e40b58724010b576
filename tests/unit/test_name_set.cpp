#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "chat/name_set.hpp"

using mux::chat::NameSet;

namespace {

std::vector<std::string> sorted_names(const NameSet& set) {
  std::vector<std::string> names;
  set.for_each([&](std::string_view name) { names.emplace_back(name); });
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("NameSet keeps default names and nicks alike") {
  NameSet set;
  CHECK(set.empty());
  CHECK(set.insert("Client 1"));
  CHECK(set.insert("Client 64"));
  CHECK(set.insert("Client 65"));
  CHECK(set.insert("alice"));
  CHECK_FALSE(set.insert("Client 64"));  // already there: the size does not move
  CHECK_FALSE(set.insert("alice"));
  CHECK(set.size() == 4);
  CHECK(set.contains("Client 65"));
  CHECK_FALSE(set.contains("Client 66"));
  CHECK(sorted_names(set) ==
        std::vector<std::string>{"Client 1", "Client 64", "Client 65", "alice"});

  CHECK(set.erase("Client 64"));
  CHECK_FALSE(set.erase("Client 64"));
  CHECK_FALSE(set.erase("bob"));
  CHECK(set.erase("alice"));
  CHECK(set.size() == 2);
  CHECK(sorted_names(set) == std::vector<std::string>{"Client 1", "Client 65"});
  set.clear();
  CHECK(set.empty());
  CHECK(sorted_names(set).empty());
}

TEST_CASE("NameSet gives back exactly the text it was given") {
  // Names that only look like a default name are kept as they came: a leading zero, a sign,
  // text after the digits, a number past 64 bits, a lowercase prefix.
  NameSet set;
  for (const char* name : {"Client 07", "Client 0", "Client +7", "Client 7x", "client 7",
                           "Client 99999999999999999999", "Client ", "Client 18446744073709551615"})
    CHECK(set.insert(name));
  CHECK(set.insert("Client 7"));
  CHECK(set.size() == 9);
  CHECK(sorted_names(set) == std::vector<std::string>{"Client ", "Client +7", "Client 0",
                                                      "Client 07", "Client 18446744073709551615",
                                                      "Client 7", "Client 7x",
                                                      "Client 99999999999999999999", "client 7"});
  CHECK(set.erase("Client 07"));
  CHECK(set.contains("Client 7"));
}

TEST_CASE("NameSet holds a dense block of numbers") {
  NameSet set;
  for (int number = 1000; number < 3048; ++number)
    CHECK(set.insert("Client " + std::to_string(number)));
  CHECK(set.size() == 2048);
  for (int number = 1000; number < 3048; number += 2)
    CHECK(set.erase("Client " + std::to_string(number)));
  CHECK(set.size() == 1024);
  CHECK(set.contains("Client 1001"));
  CHECK_FALSE(set.contains("Client 1000"));
  CHECK(sorted_names(set).size() == 1024);
}
