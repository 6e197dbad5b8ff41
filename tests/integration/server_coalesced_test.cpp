// Datagrams that arrive coalesced (UDP GSO sends, GRO receives) are each handled and counted alone.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/running_server.hpp"
#include "support/traffic.hpp"

namespace {

namespace proto = ferry::protocol;
using namespace ferry::test;
using bytes = std::vector<std::byte>;

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("datagrams that arrive coalesced (UDP GSO, GRO) are each handled and counted alone") {
  // ferry sends a run of equal GETs as one GSO send; ferryd reads them as one GRO buffer.
  temp_dir root;
  root.write("f.txt", "still served");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  traffic t{srv, cli};
  SUBCASE("five GETs, the third damaged: four answered, one counted corrupt") {
    std::vector<bytes> gets;
    for (std::uint64_t k = 0; k < 5; ++k)
      gets.push_back(cli.encode_validated(100 + k, proto::get_request{"f.txt", k, 1}));
    const auto segment = gets[0].size();
    gets[2][gets[2].size() / 2] ^= std::byte{0x40};
    bytes all;
    for (const auto& g : gets) {
      REQUIRE(g.size() == segment);
      all.insert(all.end(), g.begin(), g.end());
    }
    if (!cli.send_gso(all, static_cast<std::uint16_t>(segment))) {
      MESSAGE("this kernel cannot send with UDP GSO; nothing to test");
      return;
    }
    t.sent += 5;
    t.wait_received();
    // Replies may come in any order (the first reads of a file go to the thread pool).
    std::set<std::uint64_t> answered;
    for (int n = 0; n < 4; ++n) {
      const auto wire = cli.recv_raw();
      REQUIRE(wire);
      const auto r = ferry::codec::decode_reply(*wire);
      REQUIRE(r);
      const auto k = r->hdr.request_id - 100;
      const auto* d = std::get_if<proto::data_reply>(&r->body);
      REQUIRE(d != nullptr);
      CHECK(d->offset == k);
      REQUIRE(d->length == 1);
      REQUIRE(k < 12);
      CHECK(static_cast<char>(d->payload[0]) == "still served"[k]);
      answered.insert(k);
    }
    CHECK(answered == std::set<std::uint64_t>{0, 1, 3, 4});
    t.expect_served();
    const auto after = srv.counter_snapshot();
    CHECK(after.datagrams_in - t.before.datagrams_in == 6);
    CHECK(after.get_requests - t.before.get_requests == 5);
    CHECK(after.dropped_corrupt - t.before.dropped_corrupt == 1);
  }
  SUBCASE("two coalesced datagrams longer than any request: each dropped as truncated") {
    auto big = cli.encode_validated(200, proto::stat_request{"f.txt"});
    big.resize(proto::max_request_size + 100, std::byte{0});
    bytes all = big;
    all.insert(all.end(), big.begin(), big.end());
    if (!cli.send_gso(all, static_cast<std::uint16_t>(big.size()))) {
      MESSAGE("this kernel cannot send with UDP GSO; nothing to test");
      return;
    }
    t.sent += 2;
    t.wait_received();
    t.expect_served();
    t.check_counters(0, 0, 0, 2);
  }
}

TEST_SUITE_END();
