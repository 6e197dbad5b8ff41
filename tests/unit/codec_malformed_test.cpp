// Structurally bad datagrams with valid checksums are refused without throwing: truncation at
// every offset, oversized length tags (before anything is allocated), trailing bytes, bools and
// enums out of range, and a GET with block size 0.

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

TEST_CASE("truncation at every offset fails cleanly") {
  const corpus c;
  for (const auto& [wire, request] : c.sealed()) {
    REQUIRE(decode_code(*wire, request) == errc::ok);
    const std::size_t size = wire->size();
    for (std::size_t len = 0; len < size; ++len) {
      CAPTURE(size);
      CAPTURE(len);
      std::span<const std::byte> prefix{wire->data(), len};
      errc code = errc::ok;
      CHECK_NOTHROW(code = decode_code(prefix, request));
      CHECK(in(code, {errc::malformed, errc::corrupt}));
      // Long enough to hold a checksum: the last eight bytes are not the checksum of the rest.
      if (len >= min_sealed_size) CHECK(code == errc::corrupt);
    }
  }
  for (const bytes* wire : c.data()) {
    REQUIRE(decode_reply(*wire));
    for (std::size_t len = 0; len < wire->size(); ++len) {
      CAPTURE(wire->size());
      CAPTURE(len);
      std::span<const std::byte> prefix{wire->data(), len};
      errc code = errc::ok;
      CHECK_NOTHROW(code = decode_reply(prefix).error());
      CHECK(in(code, {errc::malformed, errc::corrupt}));
      // Fields cut short, or a payload shorter than its length tag: found before the checksum.
      CHECK(code == errc::malformed);
    }
  }
}

TEST_CASE("oversized length tags are rejected before anything is allocated") {
  // Under ASan, a decoder that trusted these tags would abort with allocation-size-too-big.
  constexpr std::uint64_t huge = std::uint64_t{1} << 40;
  SUBCASE("path tag of 2^40 in every request") {
    CHECK(decode_request(wire_builder{msg_type::list_request}.u64(huge).raw("abc").get()).error() ==
          errc::malformed);
    CHECK(decode_request(wire_builder{msg_type::stat_request}.u64(huge).raw("abc").get()).error() ==
          errc::malformed);
    CHECK(decode_request(wire_builder{msg_type::get_request}.u64(huge).raw("abc").get()).error() ==
          errc::malformed);
  }
  SUBCASE("path of max_path + 1 bytes, all present") {
    const std::string ok_path(proto::max_path, 'a');
    const std::string long_path(proto::max_path + 1, 'a');
    REQUIRE(decode_request(wire_builder{msg_type::stat_request}.str(ok_path).get()));
    CHECK(decode_request(wire_builder{msg_type::stat_request}.str(long_path).get()).error() ==
          errc::malformed);
    CHECK(
        decode_request(wire_builder{msg_type::list_request}.str(long_path).str("").get()).error() ==
        errc::malformed);
    CHECK(decode_request(wire_builder{msg_type::get_request}.str(long_path).u64(0).u32(512).get())
              .error() == errc::malformed);
  }
  SUBCASE("cursor of max_name + 1 bytes, all present") {
    REQUIRE(decode_request(wire_builder{msg_type::list_request}
                               .str("d")
                               .str(std::string(proto::max_name, 'c'))
                               .get()));
    CHECK(decode_request(wire_builder{msg_type::list_request}
                             .str("d")
                             .str(std::string(proto::max_name + 1, 'c'))
                             .get())
              .error() == errc::malformed);
    CHECK(decode_request(wire_builder{msg_type::list_request}.str("d").u64(huge).get()).error() ==
          errc::malformed);
  }
  SUBCASE("list entry count over max_list_entries, every entry present") {
    auto build = [](std::size_t count) {
      wire_builder w{msg_type::list_reply};
      w.u64(count);
      for (std::size_t i = 0; i < count; ++i)
        w.str(fmt::format("e{}", i)).u8(0).u64(i).i64(0).u16(0644).str("");
      return w.u8(1).get();
    };
    auto ok = decode_reply(build(proto::max_list_entries));
    REQUIRE(ok);
    CHECK(std::get<proto::list_reply>(ok->body).entries.size() == proto::max_list_entries);
    CHECK(decode_reply(build(proto::max_list_entries + 1)).error() == errc::malformed);
    CHECK(decode_reply(wire_builder{msg_type::list_reply}.u64(huge).get()).error() ==
          errc::malformed);
  }
  SUBCASE("entry name over max_name") {
    REQUIRE(decode_reply(list_reply_wire(std::string(proto::max_name, 'n'))));
    CHECK(decode_reply(list_reply_wire(std::string(proto::max_name + 1, 'n'))).error() ==
          errc::malformed);
    CHECK(
        decode_reply(wire_builder{msg_type::list_reply}.u64(1).u64(huge).raw("n").get()).error() ==
        errc::malformed);
  }
  SUBCASE("error message over max_message") {
    REQUIRE(decode_reply(
        wire_builder{msg_type::error_reply}.u8(5).str(std::string(proto::max_message, 'm')).get()));
    CHECK(decode_reply(wire_builder{msg_type::error_reply}
                           .u8(5)
                           .str(std::string(proto::max_message + 1, 'm'))
                           .get())
              .error() == errc::malformed);
    CHECK(
        decode_reply(wire_builder{msg_type::error_reply}.u8(5).u64(huge).raw("m").get()).error() ==
        errc::malformed);
  }
  SUBCASE("data payload tag over max_block_size, with that many bytes and a valid checksum") {
    const auto v = version_of_size(10 * four_gib);
    const bytes at_limit = pattern_payload(proto::max_block_size, 4);
    REQUIRE(decode_reply(data_reply_wire(0, 0, v, at_limit.size(), at_limit, at_limit)));
    const bytes over = pattern_payload(proto::max_block_size + 1, 4);
    const auto wire = data_reply_wire(0, 0, v, over.size(), over, over);
    REQUIRE(wire.size() <= proto::max_datagram);
    CHECK(decode_reply(wire).error() == errc::malformed);
    CHECK(decode_reply(data_reply_wire(0, 0, v, huge, at_limit, at_limit)).error() ==
          errc::malformed);
  }
  SUBCASE("data payload tag not equal to the bytes that follow") {
    const auto v = version_of_size(10 * four_gib);
    const bytes payload = pattern_payload(100, 4);
    const std::span<const std::byte> all{payload};
    REQUIRE(decode_reply(data_reply_wire(0, 0, v, 100, all, all)));
    // One byte more than the tag says; the checksum covers what the tag names.
    CHECK(decode_reply(data_reply_wire(0, 0, v, 99, all, all.first(99))).error() ==
          errc::malformed);
    // One byte fewer than the tag says.
    CHECK(decode_reply(data_reply_wire(0, 0, v, 100, all.first(99), all)).error() ==
          errc::malformed);
  }
}

TEST_CASE("trailing bytes after a valid body are rejected") {
  const corpus c;
  SUBCASE("appended to a whole datagram") {
    for (const auto& [wire, request] : c.sealed()) {
      REQUIRE(decode_code(*wire, request) == errc::ok);
      const std::size_t size = wire->size();
      for (std::byte extra : {std::byte{0}, std::byte{0xff}}) {
        auto longer = *wire;
        longer.push_back(extra);
        CAPTURE(size);
        const auto code = decode_code(longer, request);
        CHECK(in(code, {errc::malformed, errc::corrupt}));
        // The last eight bytes are no longer the checksum of the rest.
        CHECK(code == errc::corrupt);
      }
    }
    for (const bytes* wire : c.data()) {
      REQUIRE(decode_reply(*wire));
      for (std::byte extra : {std::byte{0}, std::byte{0xff}}) {
        auto longer = *wire;
        longer.push_back(extra);
        CAPTURE(wire->size());
        const auto code = decode_reply(longer).error();
        CHECK(in(code, {errc::malformed, errc::corrupt}));
        // The payload is longer than its length tag says.
        CHECK(code == errc::malformed);
      }
    }
  }
  SUBCASE("inside the body, before a valid checksum") {
    for (const auto& [wire, request] : c.sealed()) {
      for (std::byte extra : {std::byte{0}, std::byte{1}, std::byte{0xff}}) {
        auto longer = *wire;
        longer.insert(longer.end() - proto::checksum_size, extra);
        const int type = std::to_integer<int>((*wire)[5]);
        CAPTURE(type);
        CAPTURE(std::to_integer<int>(extra));
        CHECK(decode_code(resealed(longer), request) == errc::malformed);
      }
    }
    // And written by hand, eight bytes of zeros after the last field.
    CHECK(decode_request(wire_builder{msg_type::stat_request}.str("f").u64(0).get()).error() ==
          errc::malformed);
    CHECK(decode_reply(wire_builder{msg_type::list_reply}.u64(0).u8(1).u8(0).get()).error() ==
          errc::malformed);
    CHECK(decode_reply(wire_builder{msg_type::error_reply}.u8(5).str("m").u8(0).get()).error() ==
          errc::malformed);
  }
}

TEST_CASE("bools and enums out of range are rejected") {
  SUBCASE("list_reply end flag of 2") {
    REQUIRE(decode_reply(list_reply_wire("n", 0, 1)));
    CHECK(decode_reply(list_reply_wire("n", 0, 2)).error() == errc::malformed);
    CHECK(decode_reply(list_reply_wire("n", 0, 0xff)).error() == errc::malformed);
  }
  SUBCASE("list_reply entry_type out of range") {
    REQUIRE(decode_reply(list_reply_wire("n", 3, 1)));
    CHECK(decode_reply(list_reply_wire("n", 4, 1)).error() == errc::malformed);
    CHECK(decode_reply(list_reply_wire("n", 0xff, 1)).error() == errc::malformed);
  }
  SUBCASE("stat_reply entry_type and digest_ready out of range") {
    REQUIRE(decode_reply(stat_reply_wire(3, 1024, 1)));
    CHECK(decode_reply(stat_reply_wire(4, 1024, 1)).error() == errc::malformed);
    CHECK(decode_reply(stat_reply_wire(0, 1024, 2)).error() == errc::malformed);
  }
  SUBCASE("stat_reply max_block outside [min_block_size, max_block_size]") {
    REQUIRE(decode_reply(stat_reply_wire(0, proto::min_block_size, 0)));
    REQUIRE(decode_reply(stat_reply_wire(0, proto::max_block_size, 0)));
    CHECK(decode_reply(stat_reply_wire(0, proto::min_block_size - 1, 0)).error() ==
          errc::malformed);
    CHECK(decode_reply(stat_reply_wire(0, proto::max_block_size + 1, 0)).error() ==
          errc::malformed);
  }
  SUBCASE("error_reply errc out of range") {
    const auto last = static_cast<std::uint8_t>(errc::bad_request);
    REQUIRE(decode_reply(wire_builder{msg_type::error_reply}.u8(last).str("").get()));
    CHECK(decode_reply(wire_builder{msg_type::error_reply}
                           .u8(static_cast<std::uint8_t>(last + 1))
                           .str("")
                           .get())
              .error() == errc::malformed);
    CHECK(decode_reply(wire_builder{msg_type::error_reply}.u8(0xff).str("").get()).error() ==
          errc::malformed);
  }
  SUBCASE("data_reply eof byte of 2") {
    const bytes payload = pattern_payload(10, 1);
    const auto v = version_of_size(10);
    REQUIRE(decode_reply(data_reply_wire(0, 1, v, 10, payload, payload)));
    CHECK(decode_reply(data_reply_wire(0, 2, v, 10, payload, payload)).error() == errc::malformed);
  }
}

TEST_CASE("GET with block_size 0 is a bad request") {
  const auto zero = wire_builder{msg_type::get_request}.str("f").u64(0).u32(0).get();
  CHECK(decode_request(zero).error() == errc::bad_request);
  REQUIRE(decode_request(wire_builder{msg_type::get_request}.str("f").u64(0).u32(1).get()));
  bytes out(1024);
  CHECK(encode_request(out, 1, proto::get_request{"f", 0, 0}).error() == errc::bad_request);
}

TEST_SUITE_END();
