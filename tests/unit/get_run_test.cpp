// GET-RUN on the wire: one request for blocks that follow each other. Its layout is a GET's
// plus a u16 count, under its own type; a count of one is written as a plain GET, and counts
// or offsets outside what PROTOCOL.md allows are refused by the encoder and the decoder alike.

#include <doctest/doctest.h>
#include <xxhash.h>

#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/encode.hpp"

namespace {

namespace proto = ferry::protocol;
using bytes = std::vector<std::byte>;
using proto::errc;
using proto::msg_type;

using ferry::test::encode_req;

// A GET-RUN written by hand, as PROTOCOL.md lays it out, with a valid checksum.
bytes run_wire(std::uint64_t id, std::string_view path, std::uint64_t offset, std::uint32_t block,
               std::uint16_t count) {
  bytes b;
  for (auto m : proto::magic) b.push_back(std::byte{m});
  b.push_back(std::byte{proto::version});
  b.push_back(std::byte{static_cast<std::uint8_t>(msg_type::get_run_request)});
  b.push_back(std::byte{0});
  b.push_back(std::byte{0});
  for (int shift = 56; shift >= 0; shift -= 8) b.push_back(std::byte((id >> shift) & 0xff));
  b.push_back(std::byte{1});
  auto le = [&](std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i, v >>= 8) b.push_back(std::byte(v & 0xff));
  };
  le(path.size(), 8);
  for (char c : path) b.push_back(std::byte(c));
  le(offset, 8);
  le(block, 4);
  le(count, 2);
  le(XXH3_64bits(b.data(), b.size()), 8);
  return b;
}

}  // namespace

TEST_CASE("a GET-RUN round-trips with its count, under its own type") {
  const auto wire = encode_req(9, proto::get_request{"big.bin", 1390 * 7, 1390, 32});
  CHECK(wire == run_wire(9, "big.bin", 1390 * 7, 1390, 32));
  auto r = ferry::codec::decode_request(wire);
  REQUIRE(r);
  CHECK(r->hdr.type == msg_type::get_run_request);
  CHECK(r->hdr.request_id == 9);
  auto* g = std::get_if<proto::get_request>(&r->body);
  REQUIRE(g != nullptr);
  CHECK(g->path == "big.bin");
  CHECK(g->offset == 1390 * 7);
  CHECK(g->block_size == 1390);
  CHECK(g->count == 32);
}

TEST_CASE("a GET of one block stays a GET, byte for byte") {
  const auto one = encode_req(3, proto::get_request{"x", 512, 512, 1});
  CHECK(std::to_integer<std::uint8_t>(one[5]) == static_cast<std::uint8_t>(msg_type::get_request));
  auto r = ferry::codec::decode_request(one);
  REQUIRE(r);
  CHECK(std::get<proto::get_request>(r->body).count == 1);
  // Two bytes more for the count, nothing else.
  CHECK(encode_req(3, proto::get_request{"x", 512, 512, 2}).size() == one.size() + 2);
}

TEST_CASE("counts and offsets out of range are refused both ways") {
  bytes out(proto::max_request_size);
  for (std::uint16_t count : {std::uint16_t{0}, std::uint16_t(proto::max_run_blocks + 1)}) {
    CAPTURE(count);
    CHECK(ferry::codec::encode_request(out, 1, proto::get_request{"f", 0, 512, count}).error() ==
          errc::bad_request);
  }
  const auto near_end = std::numeric_limits<std::uint64_t>::max() - 1000;
  CHECK(ferry::codec::encode_request(out, 1, proto::get_request{"f", near_end, 2048, 2}).error() ==
        errc::bad_request);
  // A GET's offset may be anything: the server answers one past the end itself.
  CHECK(ferry::codec::encode_request(out, 1, proto::get_request{"f", near_end, 2048, 1}));

  // On the wire: a GET-RUN of 0 or 1 block, of more than the limit, or one whose last block
  // lies past 2^64 is a bad request; the largest valid one decodes.
  CHECK(ferry::codec::decode_request(run_wire(1, "f", 0, 512, 0)).error() == errc::bad_request);
  CHECK(ferry::codec::decode_request(run_wire(1, "f", 0, 512, 1)).error() == errc::bad_request);
  CHECK(ferry::codec::decode_request(run_wire(1, "f", 0, 512, proto::max_run_blocks + 1)).error() ==
        errc::bad_request);
  CHECK(ferry::codec::decode_request(run_wire(1, "f", near_end, 2048, 2)).error() ==
        errc::bad_request);
  CHECK(ferry::codec::decode_request(run_wire(1, "f", near_end, 512, 2)));
  CHECK(ferry::codec::decode_request(run_wire(1, "f", 0, 512, proto::max_run_blocks)));
}

TEST_CASE("a GET-RUN cut short or with a byte too many is malformed") {
  const auto wire = run_wire(5, "f", 0, 512, 4);
  // Drop the count's high byte, keeping a valid checksum over what is left.
  bytes shorter{wire.begin(), wire.end() - 9};
  const auto sum = XXH3_64bits(shorter.data(), shorter.size());
  for (int i = 0; i < 8; ++i) shorter.push_back(std::byte((sum >> (8 * i)) & 0xff));
  CHECK(ferry::codec::decode_request(shorter).error() == errc::malformed);
  bytes longer{wire.begin(), wire.end() - 8};
  longer.push_back(std::byte{0});
  const auto sum2 = XXH3_64bits(longer.data(), longer.size());
  for (int i = 0; i < 8; ++i) longer.push_back(std::byte((sum2 >> (8 * i)) & 0xff));
  CHECK(ferry::codec::decode_request(longer).error() == errc::malformed);
}
