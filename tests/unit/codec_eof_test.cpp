// A data reply's eof flag must agree with its offset, its length and the file size, without
// wrapping around 2^64.

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

TEST_CASE("eof must agree with offset + length and the file size") {
  const bytes payload = pattern_payload(100, 8);
  const std::span<const std::byte> p{payload};
  // Each case has a valid checksum, so only the consistency rule can reject it.
  SUBCASE("eof with offset + length == size is accepted") {
    CHECK(decode_reply(data_reply_wire(900, 1, version_of_size(1000), 100, p, p)));
  }
  SUBCASE("eof short of the end of the file") {
    CHECK(decode_reply(data_reply_wire(800, 1, version_of_size(1000), 100, p, p)).error() ==
          errc::malformed);
  }
  SUBCASE("eof past the end of the file") {
    CHECK(decode_reply(data_reply_wire(950, 1, version_of_size(1000), 100, p, p)).error() ==
          errc::malformed);
  }
  SUBCASE("not eof, but the block runs past the end of the file") {
    CHECK(decode_reply(data_reply_wire(901, 0, version_of_size(1000), 100, p, p)).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(800, 0, version_of_size(1000), 100, p, p)));
  }
  SUBCASE("not eof, although the block ends exactly at the end of the file") {
    CHECK(decode_reply(data_reply_wire(900, 0, version_of_size(1000), 100, p, p)).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(899, 0, version_of_size(1000), 100, p, p)));
  }
  SUBCASE("an empty eof block must sit exactly at the end") {
    CHECK(decode_reply(data_reply_wire(1000, 1, version_of_size(1000), 0, {}, {})));
    CHECK(decode_reply(data_reply_wire(999, 1, version_of_size(1000), 0, {}, {})).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(1000, 0, version_of_size(1000), 0, {}, {})).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(1001, 0, version_of_size(1000), 0, {}, {})).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(999, 0, version_of_size(1000), 0, {}, {})));
  }
  SUBCASE("a payload longer than the whole file") {
    CHECK(decode_reply(data_reply_wire(0, 1, version_of_size(99), 100, p, p)).error() ==
          errc::malformed);
    CHECK(decode_reply(data_reply_wire(0, 0, version_of_size(99), 100, p, p)).error() ==
          errc::malformed);
  }
}

TEST_CASE("eof consistency does not wrap around 2^64") {
  const bytes payload = pattern_payload(20, 8);
  const std::span<const std::byte> p{payload};
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  // offset + 20 wraps to 10, which equals the file size.
  CHECK(decode_reply(data_reply_wire(max - 9, 1, version_of_size(10), 20, p, p)).error() ==
        errc::malformed);
  // offset + 20 wraps to 19, which is inside a 1 MiB file.
  CHECK(decode_reply(data_reply_wire(max, 0, version_of_size(1 << 20), 20, p, p)).error() ==
        errc::malformed);
  // In a file of 2^64 - 1 bytes: offset + 20 wraps to 0, or to 2^64 - 1, the file size; and
  // the block that really is the last 20 bytes, and the one just before it.
  CHECK(decode_reply(data_reply_wire(max - 19, 0, version_of_size(max), 20, p, p)).error() ==
        errc::malformed);
  CHECK(decode_reply(data_reply_wire(max, 1, version_of_size(max), 20, p, p)).error() ==
        errc::malformed);
  CHECK(decode_reply(data_reply_wire(max - 20, 1, version_of_size(max), 20, p, p)));
  CHECK(decode_reply(data_reply_wire(max - 21, 0, version_of_size(max), 20, p, p)));
  // The encoder refuses the same replies.
  bytes out(proto::max_datagram);
  CHECK(encode_reply(out, 1, make_data(max - 9, true, version_of_size(10), payload)).error() ==
        errc::bad_request);
  CHECK(encode_reply(out, 1, make_data(max, false, version_of_size(1 << 20), payload)).error() ==
        errc::bad_request);
  CHECK(encode_reply(out, 1, make_data(max - 19, false, version_of_size(max), payload)).error() ==
        errc::bad_request);
  CHECK(encode_reply(out, 1, make_data(max - 20, true, version_of_size(max), payload)));
}

TEST_SUITE_END();
