// Unit tests for listing pages (server::make_page): each page fits its byte budget, a cursor
// resumes strictly after a name, and paging stays correct while the directory changes.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/codec.hpp"
#include "server/dir_cache.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::server::make_page;

std::vector<proto::list_entry> sorted_entries(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::vector<proto::list_entry> out;
  for (auto& n : names) out.push_back({n, proto::entry_type::file, n.size(), 1});
  return out;
}

std::size_t wire_size(const proto::list_reply& page) {
  std::vector<std::byte> out(proto::max_datagram);
  auto n = ferry::codec::encode_reply(out, 1, page);
  REQUIRE(n);
  return *n;
}

// Pages through `entries` from the start, as a client does, and returns every name seen.
std::vector<std::string> page_all(const std::vector<proto::list_entry>& entries, std::size_t budget,
                                  std::size_t* pages = nullptr) {
  std::vector<std::string> seen;
  std::string cursor;
  for (std::size_t i = 0; i < entries.size() + 2; ++i) {
    const auto page = make_page(entries, cursor, budget);
    CHECK(wire_size(page) <= std::max(budget, ferry::codec::list_reply_base_size +
                                                  ferry::codec::list_entry_wire_size(255)));
    for (const auto& e : page.entries) seen.push_back(e.name);
    if (pages) ++*pages;
    if (page.end) return seen;
    REQUIRE_FALSE(page.entries.empty());
    cursor = page.entries.back().name;
  }
  FAIL("paging did not end");
  return seen;
}

}  // namespace

TEST_CASE("an empty directory is one empty, final page") {
  const auto page = make_page({}, "", proto::max_small_reply);
  CHECK(page.entries.empty());
  CHECK(page.end);
}

TEST_CASE("paging returns every name once, in order, each page within its budget") {
  std::vector<std::string> names;
  std::mt19937_64 rng{42};
  for (int i = 0; i < 5000; ++i)
    names.push_back("name-" + std::to_string(rng() % 1'000'000'000) + std::string(rng() % 60, 'x'));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  const auto entries = sorted_entries(names);
  std::size_t pages = 0;
  const auto seen = page_all(entries, proto::max_small_reply, &pages);
  CHECK(seen == names);
  CHECK(pages > names.size() / proto::max_list_entries);
  // Pages are filled: on average well over half the budget is used.
  std::size_t wire_bytes = 0;
  for (const auto& n : names) wire_bytes += ferry::codec::list_entry_wire_size(n.size());
  CHECK(pages < 2 * wire_bytes / proto::max_small_reply + 2);
}

TEST_CASE("a cursor resumes strictly after it, whether or not the name exists") {
  const auto entries = sorted_entries({"a", "b", "d", "e"});
  CHECK(make_page(entries, "b", 1200).entries.front().name == "d");
  CHECK(make_page(entries, "c", 1200).entries.front().name == "d");
  CHECK(make_page(entries, "0", 1200).entries.front().name == "a");
  const auto past = make_page(entries, "z", 1200);
  CHECK(past.entries.empty());
  CHECK(past.end);
  // Bytewise order: uppercase and UTF-8 sort as bytes, as the server sorts them.
  const auto mixed = sorted_entries({"Z", "a", "\xc3\xa9t\xc3\xa9"});
  CHECK(make_page(mixed, "a", 1200).entries.front().name == "\xc3\xa9t\xc3\xa9");
}

TEST_CASE("every page holds at least one entry, even one larger than the budget") {
  const auto entries = sorted_entries({std::string(255, 'a'), std::string(255, 'b')});
  const auto first = make_page(entries, "", 10);
  REQUIRE(first.entries.size() == 1);
  CHECK_FALSE(first.end);
  const auto second = make_page(entries, first.entries[0].name, 10);
  REQUIRE(second.entries.size() == 1);
  CHECK(second.end);
  CHECK(wire_size(second) <= proto::max_small_reply);
}

TEST_CASE("no page holds more than max_list_entries, however large the budget") {
  std::vector<std::string> names;
  for (int i = 0; i < 1000; ++i) names.push_back(std::to_string(10000 + i));
  const auto page = make_page(sorted_entries(names), "", proto::max_datagram);
  CHECK(page.entries.size() == proto::max_list_entries);
  CHECK_FALSE(page.end);
}

TEST_CASE("names present throughout appear exactly once while the directory changes") {
  std::mt19937_64 rng{7};
  std::set<std::string> dir;
  for (int i = 0; i < 3000; ++i) dir.insert(fmt::format("f{}", rng() % 100000));
  const std::set<std::string> stable_at_start = dir;
  std::set<std::string> removed;
  std::vector<std::string> seen;
  std::string cursor;
  for (int pages = 0;; ++pages) {
    REQUIRE(pages < 10000);
    const auto entries = sorted_entries({dir.begin(), dir.end()});
    const auto page = make_page(entries, cursor, proto::max_small_reply);
    for (const auto& e : page.entries) {
      CHECK((seen.empty() || e.name > seen.back()));  // never backwards, never repeated
      seen.push_back(e.name);
    }
    if (page.end) break;
    cursor = page.entries.back().name;
    // Between pages: add a few names anywhere and remove a few.
    for (int k = 0; k < 3; ++k) dir.insert(fmt::format("f{}", rng() % 100000));
    for (int k = 0; k < 2 && !dir.empty(); ++k) {
      auto it = dir.begin();
      std::advance(it, static_cast<long>(rng() % dir.size()));
      removed.insert(*it);
      dir.erase(it);
    }
  }
  const std::set<std::string> seen_set{seen.begin(), seen.end()};
  CHECK(seen_set.size() == seen.size());
  for (const auto& name : stable_at_start)
    if (!removed.contains(name)) CHECK(seen_set.contains(name));
}
