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

TEST_CASE("FlushList: a drain stopped part way keeps the rest, in order, ahead of later items") {
  mux::FlushList<Writer> list;
  std::vector<Writer> writers(8);  // a..h
  for (std::size_t i = 0; i < writers.size(); ++i) {
    writers[i].name = std::string(1, static_cast<char>('a' + i));
    list.add(writers[i], writers[i].entry);
  }
  Writer& a = writers[0];
  Writer& f = writers[5];
  Writer& g = writers[6];
  Writer& h = writers[7];
  std::vector<std::string> names;
  auto record = [&](Writer& writer) { names.push_back(writer.name); };
  int left = 5;
  CHECK_FALSE(list.drain_while(record, [&] { return --left > 0; }));
  CHECK(names == std::vector<std::string>{"a", "b", "c", "d", "e"});
  CHECK(list.size() == 3);
  CHECK_FALSE(a.entry.listed());
  CHECK(f.entry.listed());
  // Between the turns (the drained part was compacted away, so the places moved): a drained
  // item gets output again (listed at the end), one still listed gets more (keeps its place),
  // one is destroyed (removed).
  list.add(a, a.entry);
  list.add(f, f.entry);
  list.remove(g.entry);
  CHECK(list.size() == 3);
  // At least one item per turn, even when more() says no at once.
  names.clear();
  CHECK_FALSE(list.drain_while(record, [] { return false; }));
  CHECK(names == std::vector<std::string>{"f"});
  list.remove(h.entry);
  list.add(h, h.entry);
  names.clear();
  CHECK(list.drain_while(record, [] { return true; }));
  CHECK(names == std::vector<std::string>{"a", "h"});
  CHECK(list.empty());
  for (const Writer& writer : writers)
    CHECK_FALSE(writer.entry.listed());
}
