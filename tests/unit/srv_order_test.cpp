// Unit tests for what discovery decides without DNS: the srv+NAME syntax, and the RFC 2782
// order of SRV records (priority first, weighted choice within a priority).

#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "client/discovery.hpp"

namespace {

using ferry::client::order_srv;
using ferry::client::parse_server_spec;
using ferry::client::srv_record;

std::vector<std::string> targets(const std::vector<srv_record>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) out.push_back(r.target);
  return out;
}

}  // namespace

TEST_SUITE_BEGIN("discovery");

TEST_CASE("srv+NAME names SRV records; HOST[:PORT] stays as it was") {
  std::string why;
  auto s = parse_server_spec("srv+files.example", why);
  REQUIRE(s);
  CHECK(s->srv);
  CHECK(s->host == "files.example");
  auto h = parse_server_spec("files.example:7071", why);
  REQUIRE(h);
  CHECK_FALSE(h->srv);
  CHECK(h->host == "files.example");
  CHECK(h->port == 7071);
  for (const char* bad : {"srv+", "srv+files.example:7070", "srv+[::1]", "srv+a b"}) {
    CAPTURE(bad);
    why.clear();
    CHECK_FALSE(parse_server_spec(bad, why));
    CHECK_FALSE(why.empty());
  }
  CHECK_FALSE(parse_server_spec("srv+" + std::string(250, 'a'), why));
}

TEST_CASE("SRV records go lowest priority first, every record once") {
  std::mt19937_64 rng{7};
  const std::vector<srv_record> in{
      {"c", 1, 20, 5}, {"a", 1, 10, 0}, {"d", 1, 30, 1}, {"b", 1, 10, 50}, {"e", 1, 20, 5}};
  for (int round = 0; round < 50; ++round) {
    const auto out = order_srv(in, rng);
    REQUIRE(out.size() == in.size());
    for (std::size_t i = 1; i < out.size(); ++i) CHECK(out[i - 1].priority <= out[i].priority);
    auto t = targets(out);
    CHECK(((t[0] == "a" && t[1] == "b") || (t[0] == "b" && t[1] == "a")));
    CHECK(((t[2] == "c" && t[3] == "e") || (t[2] == "e" && t[3] == "c")));
    CHECK(t[4] == "d");
  }
  CHECK(order_srv({}, rng).empty());
}

TEST_CASE("within a priority, a record leads in proportion to its weight") {
  std::mt19937_64 rng{11};
  const std::vector<srv_record> in{
      {"heavy", 1, 0, 60}, {"light", 1, 0, 20}, {"zero", 1, 0, 0}, {"mid", 1, 0, 20}};
  std::map<std::string, int> first;
  constexpr int rounds = 20'000;
  for (int i = 0; i < rounds; ++i) ++first[order_srv(in, rng).front().target];
  // Weights 60:20:20 of 100, and weight 0 only when the draw is 0 (1 in 101).
  CHECK(first["heavy"] > rounds * 55 / 100);
  CHECK(first["heavy"] < rounds * 65 / 100);
  CHECK(first["light"] > rounds * 16 / 100);
  CHECK(first["mid"] > rounds * 16 / 100);
  CHECK(first["zero"] < rounds * 3 / 100);
  CHECK(first["zero"] > 0);
}
