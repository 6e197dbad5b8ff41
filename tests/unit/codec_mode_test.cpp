// Protocol version 2: the permission bits in STAT and LIST, and a symlink's target in LIST, each
// bounded on both ends: what the decoder refuses, the encoder refuses to write.

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <variant>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/codec_wire.hpp"

using namespace ferry::test;  // proto, bytes, errc, wire_builder and the codec's calls

TEST_SUITE_BEGIN("codec");

TEST_CASE("modes travel in STAT and LIST, at most 07777") {
  SUBCASE("a listing keeps every permission bit, setuid, setgid and sticky included") {
    for (const int m : {0, 0644, 0755, 04755, 02750, 01777, 07777}) {
      const auto mode = static_cast<std::uint16_t>(m);
      CAPTURE(mode);
      const auto r = decode_reply(list_reply_wire("f", 0, 1, mode));
      REQUIRE(r);
      CHECK(std::get<proto::list_reply>(r->body).entries.at(0).mode == mode);
    }
  }
  SUBCASE("a stat keeps it too") {
    const auto r = decode_reply(stat_reply_wire(0, 1024, 1, 04711));
    REQUIRE(r);
    CHECK(std::get<proto::stat_reply>(r->body).mode == 04711);
  }
  SUBCASE("file-type bits or anything above 07777 is malformed") {
    for (const int m : {010000, 0100644, 040755, 0xffff}) {
      const auto mode = static_cast<std::uint16_t>(m);
      CAPTURE(mode);
      CHECK(decode_reply(list_reply_wire("f", 0, 1, mode)).error() == errc::malformed);
      CHECK(decode_reply(stat_reply_wire(0, 1024, 1, mode)).error() == errc::malformed);
    }
  }
  SUBCASE("and the encoder will not write one") {
    bytes out(proto::max_datagram);
    proto::list_reply l;
    l.entries = {{"a", proto::entry_type::file, 1, 1, 0100644, ""}};
    CHECK(encode_reply(out, 1, l).error() == errc::bad_request);
    proto::stat_reply st;
    st.max_block = proto::max_block_size;
    st.mode = 010000;
    CHECK(encode_reply(out, 1, st).error() == errc::bad_request);
  }
}

TEST_CASE("a symlink's target travels in LIST, bounded, and only for a symlink") {
  const std::string longest(proto::max_link_target, 't');
  SUBCASE("a symlink with a target, up to max_link_target bytes, decodes") {
    for (const std::string& target : {std::string{"a"}, std::string{"../x/y"}, longest}) {
      const auto r = decode_reply(list_reply_wire("l", 2, 1, 0777, target));
      REQUIRE(r);
      CHECK(std::get<proto::list_reply>(r->body).entries.at(0).target == target);
    }
  }
  SUBCASE("one byte longer is malformed, before anything is allocated for it") {
    CHECK(decode_reply(list_reply_wire("l", 2, 1, 0777, longest + "t")).error() == errc::malformed);
  }
  SUBCASE("a target on a file, directory or special file is malformed") {
    for (const std::uint8_t type : {std::uint8_t{0}, std::uint8_t{1}, std::uint8_t{3}}) {
      CAPTURE(type);
      CHECK(decode_reply(list_reply_wire("f", type, 1, 0644, "x")).error() == errc::malformed);
    }
  }
  SUBCASE("a target with a NUL is malformed") {
    CHECK(decode_reply(list_reply_wire("l", 2, 1, 0777, std::string{"a\0b", 3})).error() ==
          errc::malformed);
  }
  SUBCASE("the encoder refuses the same") {
    bytes out(proto::max_datagram);
    proto::list_reply l;
    l.entries = {{"f", proto::entry_type::file, 1, 1, 0644, "x"}};
    CHECK(encode_reply(out, 1, l).error() == errc::bad_request);
    l.entries = {{"l", proto::entry_type::symlink, 1, 1, 0777, longest + "t"}};
    CHECK(encode_reply(out, 1, l).error() == errc::bad_request);
    l.entries = {{"l", proto::entry_type::symlink, 1, 1, 0777, longest}};
    const auto n = encode_reply(out, 1, l);
    REQUIRE(n);
    CHECK(*n == ferry::codec::list_reply_base_size +
                    ferry::codec::list_entry_wire_size(1, proto::max_link_target));
  }
  SUBCASE("the longest name with the longest target fits a small reply") {
    proto::list_reply l;
    l.entries = {
        {std::string(proto::max_name, 'n'), proto::entry_type::symlink, 1, 1, 0777, longest}};
    CHECK(encode_rep(1, l).size() <= proto::max_small_reply);
  }
}

TEST_CASE("a reply of another protocol version that says so decodes as that refusal") {
  // A server of version 1 answers a version-2 request with a version-1 error reply: the client
  // says what is wrong instead of waiting for an answer it cannot read.
  auto w = wire_builder{msg_type::error_reply, 9}
               .u8(static_cast<std::uint8_t>(errc::unsupported_version))
               .str("unsupported protocol version")
               .get();
  w[4] = std::byte{1};
  REQUIRE(reseal(w));
  const auto r = decode_reply(w);
  REQUIRE(r);
  CHECK(r->hdr.request_id == 9);
  CHECK(std::get<proto::error_reply>(r->body).code == errc::unsupported_version);
  SUBCASE("any other reply of another version stays unreadable") {
    auto other = wire_builder{msg_type::error_reply, 9}.u8(5).str("x").get();
    other[4] = std::byte{1};
    REQUIRE(reseal(other));
    CHECK(decode_reply(other).error() == errc::unsupported_version);
    auto list = list_reply_wire("n");
    list[4] = std::byte{1};
    REQUIRE(reseal(list));
    CHECK(decode_reply(list).error() == errc::unsupported_version);
  }
  SUBCASE("nor one whose checksum fails") {
    w.back() ^= std::byte{1};
    CHECK(decode_reply(w).error() == errc::unsupported_version);
  }
}

TEST_SUITE_END();
