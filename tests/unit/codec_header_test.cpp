// decode_request's header on failure: what the server answers an error from, without parsing
// the datagram a second time.

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <optional>

#include "common/codec.hpp"

namespace {

using namespace ferry;
using protocol::errc;

std::array<std::byte, 128> buf{};

std::span<std::byte> stat_request(std::uint64_t id) {
  auto n = codec::encode_request(buf, id, protocol::stat_request{"a/b"});
  REQUIRE(n);
  return std::span{buf}.first(*n);
}

}  // namespace

TEST_CASE("a request that fails to decode still yields its header when it has one") {
  std::optional<protocol::header> header;
  SUBCASE("a good request") {
    auto wire = stat_request(41);
    REQUIRE(codec::decode_request(wire, header));
    REQUIRE(header);
    CHECK(header->request_id == 41);
  }
  SUBCASE("another protocol version: the header is read, whatever the version") {
    auto wire = stat_request(42);
    wire[4] = std::byte{static_cast<std::uint8_t>(protocol::version + 1)};
    auto d = codec::decode_request(wire, header);
    REQUIRE_FALSE(d);
    CHECK(d.error() == errc::unsupported_version);
    REQUIRE(header);
    CHECK(header->request_id == 42);
    CHECK(header->type == protocol::msg_type::stat_request);
  }
  SUBCASE("a request damaged after its header (here its type)") {
    auto wire = stat_request(43);
    wire[5] = std::byte{0x7f};
    auto d = codec::decode_request(wire, header);
    REQUIRE_FALSE(d);
    REQUIRE(header);
    CHECK(header->request_id == 43);
  }
  SUBCASE("not a ferry datagram: no header") {
    auto wire = stat_request(44);
    wire[0] = std::byte{'X'};
    CHECK_FALSE(codec::decode_request(wire, header));
    CHECK_FALSE(header);
  }
  SUBCASE("longer than any request: not even its header is read") {
    std::array<std::byte, protocol::max_request_size + 1> big{};
    auto wire = stat_request(45);
    std::copy(wire.begin(), wire.end(), big.begin());
    CHECK_FALSE(codec::decode_request(big, header));
    CHECK_FALSE(header);
  }
}
