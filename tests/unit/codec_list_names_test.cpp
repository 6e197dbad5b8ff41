// List entry names that could leave the client's directory are refused by both the decoder and
// the encoder; ordinary odd names pass.

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

TEST_CASE("list entry names that could leave the client's directory are refused") {
  using namespace std::string_literals;
  const std::string bad_names[] = {"..",   ".",    "",     "a/b",   "/",
                                   "/etc", "../x", "x/..", "a\0b"s, "\0"s};
  for (const auto& name : bad_names) {
    CAPTURE(name);
    CHECK(decode_reply(list_reply_wire(name)).error() == errc::malformed);
    proto::list_reply m;
    m.entries = {{"fine", proto::entry_type::file, 1, 1}, {name, proto::entry_type::file, 1, 1}};
    bytes out(4096);
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("ordinary odd names are fine") {
    for (std::string_view name : {"...", ".hidden", "..x", "-dash", "a b", "ü名.txt", "a\\b"}) {
      CAPTURE(name);
      auto r = decode_reply(list_reply_wire(name));
      REQUIRE(r);
      CHECK(std::get<proto::list_reply>(r->body).entries.at(0).name == name);
    }
  }
}

TEST_SUITE_END();
