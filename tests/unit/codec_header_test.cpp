// The datagram header: decode_request's header on failure (what the server answers an error from,
// without parsing the datagram a second time), the checks on magic, version, type and flags,
// peek_request_id, and the split of the type space between requests and replies.

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <optional>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/codec_wire.hpp"

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

using namespace ferry::test;  // proto, bytes, wire_builder, corpus and the codec's calls

TEST_SUITE_BEGIN("codec");

TEST_CASE("header checks") {
  const auto request = encode_req(5, proto::stat_request{"f"});
  const auto reply = encode_rep(5, proto::error_reply{errc::busy, ""});
  SUBCASE("decode_header reads the fields") {
    auto h = decode_header(request);
    REQUIRE(h);
    CHECK(h->type == msg_type::stat_request);
    CHECK(h->request_id == 5);
    CHECK(h->flags == 0);
    CHECK(decode_header(std::span<const std::byte>{request.data(), proto::header_size}));
  }
  SUBCASE("wrong magic is malformed") {
    for (std::size_t i = 0; i < proto::magic.size(); ++i) {
      CAPTURE(i);
      auto req = request;
      req[i] ^= std::byte{0x20};
      CHECK(decode_header(req).error() == errc::malformed);
      CHECK(decode_request(req).error() == errc::malformed);
      auto rep = reply;
      rep[i] ^= std::byte{0x20};
      CHECK(decode_reply(rep).error() == errc::malformed);
    }
  }
  SUBCASE("wrong protocol version is unsupported_version") {
    for (std::uint8_t v : {std::uint8_t{0}, std::uint8_t{1}, std::uint8_t{3}, std::uint8_t{0xff}}) {
      CAPTURE(v);
      auto req = request;
      req[4] = std::byte{v};
      CHECK(decode_header(req).error() == errc::unsupported_version);
      CHECK(decode_request(req).error() == errc::unsupported_version);
      auto rep = reply;
      rep[4] = std::byte{v};
      CHECK(decode_reply(rep).error() == errc::unsupported_version);
    }
  }
  SUBCASE("fewer bytes than a header") {
    CHECK(decode_header(std::span<const std::byte>{}).error() == errc::malformed);
    CHECK(
        decode_header(std::span<const std::byte>{request.data(), proto::header_size - 1}).error() ==
        errc::malformed);
  }
  SUBCASE("a header with no body") {
    // No room for a checksum: unverifiable, hence corrupt, and never answered.
    std::span<const std::byte> only{request.data(), proto::header_size};
    CHECK(decode_request(only).error() == errc::corrupt);
  }
  SUBCASE("reply types to decode_request, request types to decode_reply") {
    const corpus c;
    for (const auto& wire : c.replies) {
      CAPTURE(std::to_integer<int>(wire[5]));
      CHECK(decode_request(wire).error() == errc::malformed);
    }
    for (const auto& wire : c.requests) {
      CAPTURE(std::to_integer<int>(wire[5]));
      CHECK(decode_reply(wire).error() == errc::malformed);
    }
    // A valid stat_request body under the reply type code and vice versa.
    const std::uint8_t unknown[] = {0x00, 0x04, 0x7f, 0x80, 0x84, 0xed, 0xef, 0xff};
    // Resealed after the type change, so the type check and not the checksum rejects them.
    for (std::uint8_t t : unknown) {
      CAPTURE(t);
      auto req = request;
      req[5] = std::byte{t};
      CHECK(decode_request(resealed(req)).error() == errc::malformed);
      auto rep = reply;
      rep[5] = std::byte{t};
      CHECK(decode_reply(resealed(rep)).error() == errc::malformed);
    }
    // A known type of the other direction, with a valid checksum.
    auto req = request;
    req[5] = std::byte{static_cast<std::uint8_t>(msg_type::stat_reply)};
    CHECK(decode_request(resealed(req)).error() == errc::malformed);
    auto rep = reply;
    rep[5] = std::byte{static_cast<std::uint8_t>(msg_type::stat_request)};
    CHECK(decode_reply(resealed(rep)).error() == errc::malformed);
  }
  SUBCASE("the reserved flags are covered by the checksum, and otherwise ignored") {
    // Bit 0 of a request is flag_token, tested below; in a reply it means nothing.
    for (std::uint16_t flags : {std::uint16_t{1}, std::uint16_t{0x8000}, std::uint16_t{0xffff}}) {
      CAPTURE(flags);
      const auto req_flags = static_cast<std::uint16_t>(flags & ~proto::flag_token);
      auto req = request;
      req[6] = std::byte(req_flags >> 8);
      req[7] = std::byte(req_flags & 0xff);
      if (req_flags != 0) {
        CHECK(decode_request(req).error() == errc::corrupt);
        auto r = decode_request(resealed(req));
        REQUIRE(r);
        CHECK(r->hdr.flags == req_flags);
        CHECK(!r->hdr.has_token());
        CHECK(std::get<proto::stat_request>(r->body).path == "f");
        CHECK(encode_req(r->hdr.request_id, r->body) == request);  // written as zero again
      }
      auto rep = reply;
      rep[6] = std::byte(flags >> 8);
      rep[7] = std::byte(flags & 0xff);
      CHECK(decode_reply(rep).error() == errc::corrupt);
      auto r2 = decode_reply(resealed(rep));
      REQUIRE(r2);
      CHECK(r2->hdr.flags == flags);
    }
  }
  SUBCASE("a request's token travels after the header, covered by the checksum") {
    proto::address_token token{};
    for (std::size_t i = 0; i < token.size(); ++i) token[i] = std::byte(0xa0 + i);
    const proto::request body = proto::get_request{"dir/f", 65536, 4096};
    bytes with(proto::max_request_size);
    auto n = ferry::codec::encode_request(with, 77, body, &token);
    REQUIRE(n);
    with.resize(*n);
    CHECK(with.size() == encode_req(77, body).size() + proto::token_size);
    auto r = decode_request(with);
    REQUIRE(r);
    CHECK(r->hdr.has_token());
    CHECK(r->hdr.token == token);
    CHECK(r->hdr.request_id == 77);
    CHECK(std::get<proto::get_request>(r->body).offset == 65536);
    // A damaged token is damage like any other.
    auto damaged = with;
    damaged[proto::header_size + 3] ^= std::byte{0x10};
    CHECK(decode_request(damaged).error() == errc::corrupt);
    // The flag without room for a token, checksum intact: malformed, not a crash or a read
    // past the end.
    auto flagged = request;
    flagged[7] |= std::byte{1};
    CHECK(decode_request(flagged).error() == errc::corrupt);
    CHECK(decode_request(resealed(flagged)).error() == errc::malformed);
    // Without the flag the same bytes are no token: the body would not decode.
    auto unflagged = with;
    unflagged[7] &= ~std::byte{1};
    CHECK(decode_request(resealed(unflagged)).error() == errc::malformed);
  }
  SUBCASE("a token reply carries the token whole") {
    proto::token_reply t;
    for (std::size_t i = 0; i < t.token.size(); ++i) t.token[i] = std::byte(i * 7);
    bytes out(proto::max_small_reply);
    auto n = ferry::codec::encode_reply(out, 5, t);
    REQUIRE(n);
    CHECK(*n == proto::header_size + 1 + proto::token_size + proto::checksum_size);
    out.resize(*n);
    auto r = decode_reply(out);
    REQUIRE(r);
    CHECK(std::get<proto::token_reply>(r->body).token == t.token);
    out.pop_back();
    CHECK(decode_reply(out).error() == errc::corrupt);
  }
  SUBCASE("a request bigger than max_request_size") {
    // No valid request is this large: even the longest path and cursor fit in about 4.4 KiB.
    const auto biggest = encode_req(1, proto::list_request{std::string(proto::max_path, 'p'),
                                                           std::string(proto::max_name, 'c')});
    CHECK(biggest.size() <= proto::max_request_size);
    auto big =
        wire_builder{msg_type::stat_request}.str(std::string(proto::max_request_size, 'a')).get();
    CHECK(decode_request(big).error() == errc::malformed);
    bytes oversized(proto::max_request_size + 1);
    std::copy(request.begin(), request.end(), oversized.begin());
    CHECK(decode_request(oversized).error() == errc::malformed);
  }
  SUBCASE("a reply bigger than max_datagram") {
    bytes oversized(proto::max_datagram + 1);
    std::copy(reply.begin(), reply.end(), oversized.begin());
    CHECK(decode_reply(oversized).error() == errc::malformed);
  }
  SUBCASE("endianness byte other than 1") {
    for (std::uint8_t e : {std::uint8_t{0}, std::uint8_t{2}, std::uint8_t{0xff}}) {
      CAPTURE(e);
      CHECK(decode_request(wire_builder{msg_type::stat_request, 1, e}.str("f").get()).error() ==
            errc::malformed);
      CHECK(decode_reply(wire_builder{msg_type::error_reply, 1, e}.u8(1).str("").get()).error() ==
            errc::malformed);
    }
    REQUIRE(decode_request(wire_builder{msg_type::stat_request, 1, 1}.str("f").get()));
    REQUIRE(decode_reply(wire_builder{msg_type::error_reply, 1, 1}.u8(1).str("").get()));
  }
  SUBCASE("endianness byte other than 1 in a data reply") {
    auto data = [](std::uint8_t e) {
      return wire_builder{msg_type::data_reply, 1, e}
          .u64(0)
          .u8(1)
          .version(version_of_size(0))
          .data_checksum({})
          .u64(0)
          .get();
    };
    REQUIRE(decode_reply(data(1)));
    for (std::uint8_t e : {std::uint8_t{0}, std::uint8_t{2}, std::uint8_t{0xff}}) {
      CAPTURE(e);
      CHECK(decode_reply(data(e)).error() == errc::malformed);
    }
  }
}

TEST_CASE("peek_request_id reads the id whatever the version") {
  auto wire = encode_req(0x8877665544332211ULL, proto::stat_request{"f"});
  CHECK(peek_request_id(wire) == 0x8877665544332211ULL);
  wire[4] = std::byte{proto::version + 1};
  REQUIRE(decode_header(wire).error() == errc::unsupported_version);
  CHECK(peek_request_id(wire) == 0x8877665544332211ULL);
  CHECK(peek_request_id(std::span<const std::byte>{wire.data(), proto::header_size}) ==
        0x8877665544332211ULL);
  CHECK(peek_request_id(std::span<const std::byte>{wire.data(), proto::header_size - 1}) == 0);
  CHECK(peek_request_id(std::span<const std::byte>{}) == 0);
}

TEST_CASE("is_request_type splits the type space at 0x80") {
  for (auto t : {msg_type::list_request, msg_type::stat_request, msg_type::get_request}) {
    CAPTURE(t);
    CHECK(proto::is_request_type(static_cast<std::uint8_t>(t)));
  }
  for (auto t :
       {msg_type::list_reply, msg_type::stat_reply, msg_type::data_reply, msg_type::error_reply}) {
    CAPTURE(t);
    CHECK_FALSE(proto::is_request_type(static_cast<std::uint8_t>(t)));
  }
  CHECK(proto::is_request_type(0x7f));
  CHECK_FALSE(proto::is_request_type(0x80));
}

TEST_SUITE_END();
