// The hand-written layout of PROTOCOL.md (wire_builder) and the encoder agree byte for byte, which
// is what lets the other codec tests build hostile inputs by hand.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/codec_wire.hpp"

using namespace ferry::test;  // proto, bytes, errc, wire_builder, corpus and the codec's calls

TEST_SUITE_BEGIN("codec");

TEST_CASE("the hand-written wire layout matches the encoder") {
  // Pins the wire format, checksums included, and proves wire_builder right, so the hostile
  // inputs built with it below are rejected for the reason each test names and not because the
  // builder or its checksum is wrong.
  SUBCASE("list_request") {
    CHECK(encode_req(0x0102030405060708ULL, proto::list_request{"d/e", "cur"}) ==
          wire_builder{msg_type::list_request, 0x0102030405060708ULL}.str("d/e").str("cur").get());
  }
  SUBCASE("stat_request") {
    CHECK(encode_req(3, proto::stat_request{"x"}) ==
          wire_builder{msg_type::stat_request, 3}.str("x").get());
  }
  SUBCASE("get_request") {
    CHECK(encode_req(3, proto::get_request{"x", 5 * four_gib, 512}) ==
          wire_builder{msg_type::get_request, 3}.str("x").u64(5 * four_gib).u32(512).get());
  }
  SUBCASE("list_reply") {
    proto::list_reply m;
    m.entries = {{"n", proto::entry_type::dir, 10, 20, 0644, ""}};
    m.end = true;
    CHECK(encode_rep(7, m) == list_reply_wire("n", 1, 1));
    m.entries = {{"l", proto::entry_type::symlink, 10, 20, 0777, "a/b"}};
    CHECK(encode_rep(7, m) == list_reply_wire("l", 2, 1, 0777, "a/b"));
    CHECK(encode_rep(7, proto::list_reply{}) ==
          wire_builder{msg_type::list_reply}.u64(0).u8(0).get());
  }
  SUBCASE("stat_reply") {
    proto::stat_reply m;
    m.type = proto::entry_type::symlink;
    m.size = 100;
    m.mtime_ns = 200;
    m.mode = 0755;
    m.version = version_of_size(100);
    m.max_block = 1024;
    m.digest_ready = true;
    m.digest = {1, 2};
    CHECK(encode_rep(7, m) == stat_reply_wire(2, 1024, 1));
  }
  SUBCASE("data_reply") {
    const bytes payload = pattern_payload(33, 2);
    const auto v = version_of_size(133);
    CHECK(encode_rep(7, make_data(100, true, v, payload)) ==
          data_reply_wire(100, 1, v, payload.size(), payload, payload));
    CHECK(encode_rep(0xfedcba9876543210ULL, make_data(50, false, v, payload)) ==
          data_reply_wire(50, 0, v, payload.size(), payload, payload, 0xfedcba9876543210ULL));
    CHECK(encode_rep(7, make_data(133, true, v, bytes{})) == data_reply_wire(133, 1, v, 0, {}, {}));
  }
  SUBCASE("error_reply") {
    CHECK(encode_rep(7, proto::error_reply{errc::busy, "later"}) ==
          wire_builder{msg_type::error_reply}.u8(10).str("later").get());
  }
}

TEST_SUITE_END();
