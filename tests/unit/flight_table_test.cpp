// Unit tests for the client's table of requests in flight: ids in increasing order with gaps,
// retirement from the front, growth of the ring while it wraps, and in-order iteration.

#include "client/flight_table.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <iterator>
#include <set>
#include <vector>

namespace {

using ferry::client::flight;
using ferry::client::flight_table;

flight block(std::uint64_t index) { return flight{index, {}, index}; }

std::vector<std::uint64_t> ids_in_flight(const flight_table& t) {
  std::vector<std::uint64_t> ids;
  t.for_each([&](std::uint64_t id, const flight&) {
    ids.push_back(id);
    return true;
  });
  return ids;
}

}  // namespace

TEST_CASE("flights are found by id, with gaps for ids used otherwise") {
  flight_table t;
  CHECK(t.empty());
  std::uint64_t id = 0;
  CHECK(t.oldest(&id) == nullptr);
  t.add(1000, block(7));
  t.add(1001, block(8));
  t.add(1005, block(9));  // 1002-1004 went to other requests on the connection
  CHECK(t.size() == 3);
  REQUIRE(t.find(1001) != nullptr);
  CHECK(t.find(1001)->index == 8);
  CHECK(t.find(1003) == nullptr);
  CHECK(t.find(999) == nullptr);
  CHECK(t.find(1006) == nullptr);
  CHECK(ids_in_flight(t) == std::vector<std::uint64_t>{1000, 1001, 1005});

  CHECK_FALSE(t.erase(1003));
  CHECK(t.erase(1001));
  CHECK_FALSE(t.erase(1001));  // a duplicate reply
  REQUIRE(t.oldest(&id) != nullptr);
  CHECK(id == 1000);
  CHECK(t.erase(1000));  // the front goes, and the gap behind it with it
  REQUIRE(t.oldest(&id) != nullptr);
  CHECK(id == 1005);
  CHECK(t.oldest(&id)->index == 9);
  CHECK(t.erase(1005));
  CHECK(t.empty());
  CHECK(t.oldest(&id) == nullptr);
  // Empty again: the next id starts a new range.
  t.add(5, block(1));
  CHECK(t.find(5) != nullptr);
  t.clear();
  CHECK(t.find(5) == nullptr);
  CHECK(t.empty());
}

TEST_CASE("the ring grows while it wraps, keeping every flight and their order") {
  // Checked against a plain ordered set of the ids in flight.
  flight_table t;
  std::set<std::uint64_t> model;
  std::uint64_t next = 1ULL << 40;
  for (int round = 0; round < 50; ++round) {
    // A window that slides and widens: more sent than answered each round, with gaps.
    for (int i = 0; i < 40 + round * 3; ++i, ++next) {
      if (i % 17 == 5) ++next;  // an id that went to another kind of request
      t.add(next, block(next));
      model.insert(next);
    }
    for (int i = 0; i < 35; ++i) {
      std::uint64_t id = 0;
      REQUIRE(t.oldest(&id) != nullptr);
      CHECK(id == *model.begin());
      CHECK(t.erase(id));
      model.erase(model.begin());
    }
    // Answers from the middle of the window, as reordering brings them.
    for (std::size_t k = 1; k <= 3; ++k) {
      const auto id = *std::next(model.begin(), static_cast<long>(model.size() * k / 4));
      CHECK(t.erase(id));
      CHECK_FALSE(t.erase(id));
      model.erase(id);
    }
    REQUIRE(t.size() == model.size());
    CHECK(ids_in_flight(t) == std::vector<std::uint64_t>(model.begin(), model.end()));
    for (const auto id : model) {
      REQUIRE(t.find(id) != nullptr);
      CHECK(t.find(id)->index == id);
    }
  }
}
