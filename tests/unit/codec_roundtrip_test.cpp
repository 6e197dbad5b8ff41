// Every request and reply survives encode then decode with its request id, its header type and
// every field, and the data prefix the server writes ahead of a payload is the encoder's own.

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

TEST_CASE("requests round-trip with their request id and header type") {
  SUBCASE("list_request with path and cursor") {
    const auto wire = encode_req(0x0123456789abcdefULL, proto::list_request{"dir/sub", "b.txt"});
    auto r = decode_request(wire);
    REQUIRE(r);
    CHECK(r->hdr.type == msg_type::list_request);
    CHECK(r->hdr.request_id == 0x0123456789abcdefULL);
    CHECK(r->hdr.flags == 0);
    auto* m = std::get_if<proto::list_request>(&r->body);
    REQUIRE(m != nullptr);
    CHECK(m->path == "dir/sub");
    CHECK(m->cursor == "b.txt");
  }
  SUBCASE("list_request of the root from the beginning") {
    auto r = decode_request(encode_req(0, proto::list_request{}));
    REQUIRE(r);
    CHECK(r->hdr.request_id == 0);
    auto* m = std::get_if<proto::list_request>(&r->body);
    REQUIRE(m != nullptr);
    CHECK(m->path.empty());
    CHECK(m->cursor.empty());
  }
  SUBCASE("stat_request") {
    auto r = decode_request(encode_req(UINT64_MAX, proto::stat_request{"a/b c/ü.txt"}));
    REQUIRE(r);
    CHECK(r->hdr.type == msg_type::stat_request);
    CHECK(r->hdr.request_id == UINT64_MAX);
    auto* m = std::get_if<proto::stat_request>(&r->body);
    REQUIRE(m != nullptr);
    CHECK(m->path == "a/b c/ü.txt");
  }
  SUBCASE("get_request with offsets above 4 GiB") {
    for (std::uint64_t offset : {four_gib, 5 * four_gib + 12345, std::uint64_t{1} << 63,
                                 std::numeric_limits<std::uint64_t>::max()}) {
      CAPTURE(offset);
      auto r = decode_request(encode_req(42, proto::get_request{"big.bin", offset, 65024}));
      REQUIRE(r);
      CHECK(r->hdr.type == msg_type::get_request);
      CHECK(r->hdr.request_id == 42);
      auto* m = std::get_if<proto::get_request>(&r->body);
      REQUIRE(m != nullptr);
      CHECK(m->path == "big.bin");
      CHECK(m->offset == offset);
      CHECK(m->block_size == 65024);
    }
  }
  SUBCASE("paths of exactly max_path and cursors of exactly max_name") {
    const std::string path(proto::max_path, 'p');
    const std::string cursor(proto::max_name, 'c');
    auto r = decode_request(encode_req(1, proto::list_request{path, cursor}));
    REQUIRE(r);
    CHECK(std::get<proto::list_request>(r->body).path == path);
    CHECK(std::get<proto::list_request>(r->body).cursor == cursor);
  }
}

TEST_CASE("replies round-trip with every field") {
  SUBCASE("list_reply with several entries and the end flag") {
    proto::list_reply sent;
    sent.entries = {{"a.txt", proto::entry_type::file, 10, 1'700'000'000'000'000'000},
                    {"dir", proto::entry_type::dir, 0, -5},
                    {"link", proto::entry_type::symlink, 7, 0},
                    {"pipe", proto::entry_type::other, 0, 1},
                    {"big", proto::entry_type::file, 9 * four_gib, 2}};
    for (bool end : {true, false}) {
      CAPTURE(end);
      sent.end = end;
      auto r = decode_reply(encode_rep(99, sent));
      REQUIRE(r);
      CHECK(r->hdr.type == msg_type::list_reply);
      CHECK(r->hdr.request_id == 99);
      auto* m = std::get_if<proto::list_reply>(&r->body);
      REQUIRE(m != nullptr);
      CHECK(m->entries == sent.entries);
      CHECK(m->end == end);
    }
  }
  SUBCASE("empty list_reply") {
    auto wire = encode_rep(1, proto::list_reply{});
    CHECK(wire.size() == ferry::codec::list_reply_base_size);
    auto r = decode_reply(wire);
    REQUIRE(r);
    CHECK(std::get<proto::list_reply>(r->body).entries.empty());
    CHECK_FALSE(std::get<proto::list_reply>(r->body).end);
  }
  SUBCASE("list_reply size matches list_entry_wire_size") {
    proto::list_reply sent;
    sent.entries = {{"abc", proto::entry_type::file, 1, 1}, {"de", proto::entry_type::dir, 2, 2}};
    CHECK(encode_rep(1, sent).size() == ferry::codec::list_reply_base_size +
                                            ferry::codec::list_entry_wire_size(3) +
                                            ferry::codec::list_entry_wire_size(2));
  }
  SUBCASE("stat_reply with every field") {
    proto::stat_reply sent;
    sent.type = proto::entry_type::file;
    sent.size = 7 * four_gib + 3;
    sent.mtime_ns = -1'234'567'890;
    sent.version = {11, 22, sent.size, 1'700'000'000'000'000'001, -2};
    sent.max_block = 4096;
    sent.digest_ready = true;
    sent.digest = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    auto r = decode_reply(encode_rep(0xfeed, sent));
    REQUIRE(r);
    CHECK(r->hdr.type == msg_type::stat_reply);
    CHECK(r->hdr.request_id == 0xfeed);
    auto* m = std::get_if<proto::stat_reply>(&r->body);
    REQUIRE(m != nullptr);
    CHECK(m->type == proto::entry_type::file);
    CHECK(m->size == sent.size);
    CHECK(m->mtime_ns == sent.mtime_ns);
    CHECK(m->version == sent.version);
    CHECK(m->max_block == 4096);
    CHECK(m->digest_ready);
    CHECK(m->digest == sent.digest);

    sent.type = proto::entry_type::dir;
    sent.digest_ready = false;
    auto r2 = decode_reply(encode_rep(1, sent));
    REQUIRE(r2);
    CHECK(std::get<proto::stat_reply>(r2->body).type == proto::entry_type::dir);
    CHECK_FALSE(std::get<proto::stat_reply>(r2->body).digest_ready);
  }
  SUBCASE("data_reply: the payload points into the input and equals the sent bytes") {
    const bytes payload = pattern_payload(1500, 9);
    const auto sent = make_data(5 * four_gib, false, version_of_size(6 * four_gib), payload);
    const auto wire = encode_rep(77, sent);
    CHECK(wire.size() == proto::data_reply_overhead + payload.size());
    auto r = decode_reply(wire);
    REQUIRE(r);
    CHECK(r->hdr.type == msg_type::data_reply);
    CHECK(r->hdr.request_id == 77);
    auto* m = std::get_if<proto::data_reply>(&r->body);
    REQUIRE(m != nullptr);
    CHECK(m->offset == sent.offset);
    CHECK_FALSE(m->eof);
    CHECK(m->version == sent.version);
    // The checksum field is the one PROTOCOL.md defines, computed here independently.
    CHECK(get_le64(wire, data_checksum_at) ==
          data_checksum(std::span<const std::byte>{wire}.first(data_checksum_at), payload));
    REQUIRE(m->length == payload.size());
    CHECK(m->payload == wire.data() + proto::data_reply_overhead);
    CHECK(std::equal(m->payload, m->payload + m->length, payload.begin(), payload.end()));
  }
  SUBCASE("data_reply at end of file, and an empty one") {
    const bytes payload = pattern_payload(10, 1);
    auto r = decode_reply(encode_rep(1, make_data(90, true, version_of_size(100), payload)));
    REQUIRE(r);
    CHECK(std::get<proto::data_reply>(r->body).eof);
    CHECK(std::get<proto::data_reply>(r->body).length == 10);

    auto empty = decode_reply(encode_rep(2, make_data(100, true, version_of_size(100), bytes{})));
    REQUIRE(empty);
    CHECK(std::get<proto::data_reply>(empty->body).length == 0);
    CHECK(std::get<proto::data_reply>(empty->body).eof);
  }
  SUBCASE("data_reply of max_block_size") {
    const bytes payload = pattern_payload(proto::max_block_size, 5);
    const auto wire = encode_rep(3, make_data(0, false, version_of_size(10 * four_gib), payload));
    CHECK(wire.size() <= proto::max_datagram);
    auto r = decode_reply(wire);
    REQUIRE(r);
    CHECK(std::get<proto::data_reply>(r->body).length == proto::max_block_size);
  }
  SUBCASE("error_reply") {
    for (auto code : {errc::ok, errc::not_found, errc::busy, errc::bad_request}) {
      CAPTURE(code);
      auto r = decode_reply(encode_rep(5, proto::error_reply{code, "something went wrong"}));
      REQUIRE(r);
      CHECK(r->hdr.type == msg_type::error_reply);
      CHECK(r->hdr.request_id == 5);
      auto* m = std::get_if<proto::error_reply>(&r->body);
      REQUIRE(m != nullptr);
      CHECK(m->code == code);
      CHECK(m->message == "something went wrong");
    }
    auto longest = decode_reply(
        encode_rep(6, proto::error_reply{errc::io_error, std::string(proto::max_message, 'm')}));
    REQUIRE(longest);
    CHECK(std::get<proto::error_reply>(longest->body).message.size() == proto::max_message);
  }
}

TEST_CASE("encode_data_prefix plus the payload is byte-identical to encode_reply") {
  for (std::size_t len :
       {std::size_t{0}, std::size_t{1}, std::size_t{4096}, std::size_t{proto::max_block_size}}) {
    CAPTURE(len);
    const bytes payload = pattern_payload(len, 11);
    const auto meta = make_data(3 * four_gib, true, version_of_size(3 * four_gib + len), payload);
    const auto whole = encode_rep(0xabc, meta);

    // meta.payload is ignored: the checksum is computed over the span passed alongside.
    const bytes decoy = pattern_payload(len, 12);
    for (const std::byte* p : {static_cast<const std::byte*>(nullptr), decoy.data()}) {
      auto prefix_meta = meta;
      prefix_meta.payload = p;
      bytes prefix(proto::max_datagram);
      auto n = encode_data_prefix(prefix, 0xabc, prefix_meta, payload);
      REQUIRE(n);
      CHECK(*n == proto::data_reply_overhead);
      prefix.resize(*n);
      prefix.insert(prefix.end(), payload.begin(), payload.end());
      CHECK(prefix == whole);
      CHECK(decode_reply(prefix));
    }
  }
  SUBCASE("the checksum in the prefix covers the payload passed to it") {
    const bytes a = pattern_payload(300, 1);
    const bytes b = pattern_payload(300, 2);
    const auto meta = make_data(0, false, version_of_size(1000), a);
    bytes pa(proto::data_reply_overhead);
    bytes pb(proto::data_reply_overhead);
    REQUIRE(encode_data_prefix(pa, 1, meta, a));
    REQUIRE(encode_data_prefix(pb, 1, meta, b));
    CHECK(get_le64(pa, data_checksum_at) != get_le64(pb, data_checksum_at));
    auto a_then_b = pa;
    a_then_b.insert(a_then_b.end(), b.begin(), b.end());
    CHECK(decode_reply(a_then_b).error() == errc::corrupt);
    auto b_then_b = pb;
    b_then_b.insert(b_then_b.end(), b.begin(), b.end());
    CHECK(decode_reply(b_then_b));
  }
  SUBCASE("and refuses what encode_reply refuses") {
    bytes out(proto::max_datagram);
    const bytes too_long(proto::max_block_size + 1);
    CHECK(encode_data_prefix(out, 1, make_data(0, false, version_of_size(10 * four_gib), too_long),
                             too_long)
              .error() == errc::bad_request);
    const bytes ten = pattern_payload(10, 1);
    // A payload span whose length differs from meta.length.
    const auto meta = make_data(0, false, version_of_size(100), ten);
    CHECK(encode_data_prefix(out, 1, meta, std::span<const std::byte>{ten}.first(9)).error() ==
          errc::bad_request);
    // eof, offset and length that disagree with version.size.
    CHECK(encode_data_prefix(out, 1, make_data(0, true, version_of_size(100), ten), ten).error() ==
          errc::bad_request);
    CHECK(
        encode_data_prefix(out, 1, make_data(90, false, version_of_size(100), ten), ten).error() ==
        errc::bad_request);
    CHECK(
        encode_data_prefix(out, 1, make_data(95, false, version_of_size(100), ten), ten).error() ==
        errc::bad_request);
    // An output buffer one byte short, and one exactly the right size.
    bytes small(proto::data_reply_overhead - 1);
    CHECK(encode_data_prefix(small, 1, meta, ten).error() == errc::bad_request);
    bytes exact(proto::data_reply_overhead);
    CHECK(encode_data_prefix(exact, 1, meta, ten));
  }
}

TEST_SUITE_END();
