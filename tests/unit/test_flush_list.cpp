// FlushList: each item listed once per drain whatever the number of adds, drained in listing
// order, removals (an item being destroyed) skipped, additions during the drain drained too.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/loop/flush_list.hpp"

namespace {

struct Writer {
  std::string name;
  mux::FlushList<Writer>::Entry entry;
};

std::vector<std::string> drain_names(mux::FlushList<Writer>& list) {
  std::vector<std::string> names;
  list.drain([&](Writer& writer) { names.push_back(writer.name); });
  return names;
}

}  // namespace

TEST_CASE("FlushList: an item added many times is drained once, in first-listed order") {
  mux::FlushList<Writer> list;
  Writer a{"a", {}};
  Writer b{"b", {}};
  Writer c{"c", {}};
  CHECK(list.empty());
  list.add(b, b.entry);
  list.add(a, a.entry);
  list.add(b, b.entry);
  list.add(c, c.entry);
  list.add(a, a.entry);
  CHECK(list.size() == 3);
  CHECK(a.entry.listed());
  CHECK(drain_names(list) == std::vector<std::string>{"b", "a", "c"});
  CHECK(list.empty());
  CHECK_FALSE(a.entry.listed());
  CHECK_FALSE(b.entry.listed());
  // The next batch starts empty and lists again.
  CHECK(drain_names(list).empty());
  list.add(c, c.entry);
  CHECK(drain_names(list) == std::vector<std::string>{"c"});
}

TEST_CASE("FlushList: a removed item is not drained; removing an unlisted one is a no-op") {
  mux::FlushList<Writer> list;
  Writer a{"a", {}};
  Writer b{"b", {}};
  list.remove(a.entry);
  list.add(a, a.entry);
  list.add(b, b.entry);
  list.remove(a.entry);
  list.remove(a.entry);
  CHECK_FALSE(a.entry.listed());
  CHECK(list.size() == 1);
  CHECK(drain_names(list) == std::vector<std::string>{"b"});
  // Removed, then added again in the same batch: listed once more, at the end.
  list.add(a, a.entry);
  list.add(b, b.entry);
  list.remove(a.entry);
  list.add(a, a.entry);
  CHECK(drain_names(list) == std::vector<std::string>{"b", "a"});
}

TEST_CASE("FlushList: items listed or removed during the drain are handled in the same drain") {
  mux::FlushList<Writer> list;
  Writer a{"a", {}};
  Writer b{"b", {}};
  Writer c{"c", {}};
  Writer d{"d", {}};
  list.add(a, a.entry);
  list.add(b, b.entry);
  list.add(c, c.entry);
  std::vector<std::string> names;
  list.drain([&](Writer& writer) {
    names.push_back(writer.name);
    if (names.size() == 1) {
      list.remove(b.entry);  // b goes away before its turn: skipped
      list.add(d, d.entry);  // d gets output while a writes: drained after c
      list.add(a, a.entry);  // a itself again: once more, after d
    }
  });
  CHECK(names == std::vector<std::string>{"a", "c", "d", "a"});
  CHECK(list.empty());
  CHECK_FALSE(d.entry.listed());
}
