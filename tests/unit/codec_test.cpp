// Unit tests for the wire codec: round trips, the exact wire layout, and everything a hostile
// peer can send (truncations, oversized length tags, trailing bytes, bad enums, bad checksums,
// random garbage). Nothing here opens a socket.

#include "common/codec.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "common/digest.hpp"
#include "common/protocol.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::protocol::errc;
using ferry::protocol::msg_type;
using bytes = std::vector<std::byte>;

constexpr std::uint64_t four_gib = std::uint64_t{1} << 32;

// Byte offsets of a data reply's fields, from the layout in protocol.hpp (header, endianness
// byte, offset, eof, five version fields, checksum, payload length tag, payload).
constexpr std::size_t data_endian_at = proto::header_size;
constexpr std::size_t data_offset_at = data_endian_at + 1;
constexpr std::size_t data_eof_at = data_offset_at + 8;
constexpr std::size_t data_version_at = data_eof_at + 1;
constexpr std::size_t data_checksum_at = data_version_at + 40;
constexpr std::size_t data_tag_at = data_checksum_at + 8;
constexpr std::size_t data_payload_at = data_tag_at + 8;
static_assert(data_payload_at == proto::data_reply_overhead);

bytes pattern_payload(std::size_t n, unsigned seed) {
  bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte((i * 31u + seed) & 0xffu);
  return b;
}

bytes encode_req(std::uint64_t id, const proto::request& body) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_request(out, id, body);
  REQUIRE(n);
  out.resize(*n);
  return out;
}

bytes encode_rep(std::uint64_t id, const proto::reply& body) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_reply(out, id, body);
  REQUIRE(n);
  out.resize(*n);
  return out;
}

// A data reply whose checksum matches its fields and `payload` (which must outlive it).
proto::data_reply make_data(std::uint64_t offset, bool eof, const proto::file_version& v,
                            const bytes& payload) {
  proto::data_reply d;
  d.offset = offset;
  d.eof = eof;
  d.version = v;
  d.payload = payload.data();
  d.length = static_cast<std::uint32_t>(payload.size());
  d.checksum = ferry::block_checksum(offset, eof, v, payload);
  return d;
}

proto::file_version version_of_size(std::uint64_t size) {
  return proto::file_version{0x0801, 0xabcdef12345, size, 1'700'000'000'123'456'789,
                             1'700'000'001'000'000'000};
}

// Writes datagrams by hand, following the layout the codec documents: a 16-byte big-endian
// header, then cereal's portable binary body (endianness byte 1, little-endian integers,
// 64-bit length tags). The "matches the encoder" test below proves it agrees with the codec, so
// the malformed inputs built with it differ from valid ones only where a test says so.
class wire_builder {
 public:
  explicit wire_builder(msg_type type, std::uint64_t request_id = 7, std::uint8_t endianness = 1) {
    for (auto m : proto::magic) b_.push_back(std::byte{m});
    b_.push_back(std::byte{proto::version});
    b_.push_back(std::byte{static_cast<std::uint8_t>(type)});
    b_.push_back(std::byte{0});
    b_.push_back(std::byte{0});
    for (int shift = 56; shift >= 0; shift -= 8)
      b_.push_back(std::byte((request_id >> shift) & 0xff));
    b_.push_back(std::byte{endianness});
  }
  wire_builder& u8(std::uint8_t v) {
    b_.push_back(std::byte{v});
    return *this;
  }
  wire_builder& u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i, v >>= 8) b_.push_back(std::byte(v & 0xff));
    return *this;
  }
  wire_builder& u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i, v >>= 8) b_.push_back(std::byte(v & 0xff));
    return *this;
  }
  wire_builder& i64(std::int64_t v) { return u64(static_cast<std::uint64_t>(v)); }
  wire_builder& raw(std::string_view s) {
    for (char c : s) b_.push_back(std::byte(c));
    return *this;
  }
  wire_builder& raw(std::span<const std::byte> s) {
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  wire_builder& str(std::string_view s) { return u64(s.size()).raw(s); }
  wire_builder& version(const proto::file_version& v) {
    return u64(v.dev).u64(v.ino).u64(v.size).i64(v.mtime_ns).i64(v.ctime_ns);
  }
  [[nodiscard]] const bytes& get() const { return b_; }

 private:
  bytes b_;
};

// A list reply with one entry, written by hand so any field can be out of range.
bytes list_reply_wire(std::string_view name, std::uint8_t type = 0, std::uint8_t end = 1) {
  return wire_builder{msg_type::list_reply}.u64(1).str(name).u8(type).u64(10).i64(20).u8(end).get();
}

bytes stat_reply_wire(std::uint8_t type, std::uint32_t max_block, std::uint8_t ready) {
  return wire_builder{msg_type::stat_reply}
      .u8(type)
      .u64(100)
      .i64(200)
      .version(version_of_size(100))
      .u32(max_block)
      .u8(ready)
      .u64(1)
      .u64(2)
      .get();
}

// A data reply written by hand; the checksum covers `checksum_payload` (the real payload unless a
// test wants them to differ).
bytes data_reply_wire(std::uint64_t offset, std::uint8_t eof, const proto::file_version& v,
                      std::uint64_t tag, std::span<const std::byte> payload,
                      std::span<const std::byte> checksum_payload) {
  return wire_builder{msg_type::data_reply}
      .u64(offset)
      .u8(eof)
      .version(v)
      .u64(ferry::block_checksum(offset, eof != 0, v, checksum_payload))
      .u64(tag)
      .raw(payload)
      .get();
}

// One valid encoding of every message type, with the message it came from kept alive.
struct corpus {
  bytes payload = pattern_payload(1000, 3);
  std::vector<bytes> requests;
  std::vector<bytes> replies;

  corpus() {
    requests.push_back(encode_req(1, proto::list_request{"dir/sub", "name-07"}));
    requests.push_back(encode_req(2, proto::list_request{}));
    requests.push_back(encode_req(3, proto::stat_request{"a/b.txt"}));
    requests.push_back(encode_req(4, proto::get_request{"big.bin", 5 * four_gib + 17, 65024}));
    proto::list_reply list;
    list.entries = {{"a.txt", proto::entry_type::file, 10, 5},
                    {"dir", proto::entry_type::dir, 0, -1},
                    {"link", proto::entry_type::symlink, 3, 0}};
    list.end = true;
    replies.push_back(encode_rep(5, list));
    replies.push_back(encode_rep(6, proto::list_reply{}));
    proto::stat_reply st;
    st.type = proto::entry_type::file;
    st.size = 6 * four_gib;
    st.mtime_ns = 123;
    st.version = version_of_size(st.size);
    st.max_block = proto::max_block_size;
    st.digest_ready = true;
    st.digest = {0x1111, 0x2222};
    replies.push_back(encode_rep(7, st));
    replies.push_back(encode_rep(
        8, make_data(5 * four_gib, true, version_of_size(5 * four_gib + 1000), payload)));
    replies.push_back(encode_rep(9, make_data(0, true, version_of_size(0), bytes{})));
    replies.push_back(encode_rep(10, proto::error_reply{errc::not_found, "no such file"}));
  }
};

// True if the decoded message re-encodes; `same` says whether it reproduced `wire` exactly,
// apart from the reserved header flags, which the encoder always writes as zero.
struct reencoded {
  bool ok = false;
  bool same = false;
};

bool same_apart_from_flags(const bytes& a, std::span<const std::byte> b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((i < 6 || i > 7) && a[i] != b[i]) return false;
  return true;
}

reencoded reencode_request(const ferry::codec::decoded_request& d,
                           std::span<const std::byte> wire) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_request(out, d.hdr.request_id, d.body);
  if (!n) return {};
  out.resize(*n);
  return {true, same_apart_from_flags(out, wire)};
}

reencoded reencode_reply(const ferry::codec::decoded_reply& d, std::span<const std::byte> wire) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_reply(out, d.hdr.request_id, d.body);
  if (!n) return {};
  out.resize(*n);
  return {true, same_apart_from_flags(out, wire)};
}

}  // namespace

using ferry::codec::decode_header;
using ferry::codec::decode_reply;
using ferry::codec::decode_request;
using ferry::codec::encode_data_prefix;
using ferry::codec::encode_reply;
using ferry::codec::encode_request;
using ferry::codec::peek_request_id;

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
    CHECK(m->checksum == sent.checksum);
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

    auto prefix_meta = meta;
    prefix_meta.payload = nullptr;  // ignored by encode_data_prefix
    bytes prefix(proto::max_datagram);
    auto n = encode_data_prefix(prefix, 0xabc, prefix_meta);
    REQUIRE(n);
    CHECK(*n == proto::data_reply_overhead);
    prefix.resize(*n);
    prefix.insert(prefix.end(), payload.begin(), payload.end());
    CHECK(prefix == whole);
    CHECK(decode_reply(prefix));
  }
  SUBCASE("and refuses what encode_reply refuses") {
    proto::data_reply meta;
    meta.length = proto::max_block_size + 1;
    bytes out(proto::max_datagram);
    CHECK(encode_data_prefix(out, 1, meta).error() == errc::bad_request);
    meta.length = 10;
    bytes small(proto::data_reply_overhead - 1);
    CHECK(encode_data_prefix(small, 1, meta).error() == errc::bad_request);
    bytes exact(proto::data_reply_overhead);
    CHECK(encode_data_prefix(exact, 1, meta));
  }
}

TEST_CASE("the hand-written wire layout matches the encoder") {
  // Pins the wire format, and proves wire_builder right, so the hostile inputs built with it
  // below are rejected for the reason each test names and not because the builder is wrong.
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
    m.entries = {{"n", proto::entry_type::dir, 10, 20}};
    m.end = true;
    CHECK(encode_rep(7, m) == list_reply_wire("n", 1, 1));
  }
  SUBCASE("stat_reply") {
    proto::stat_reply m;
    m.type = proto::entry_type::symlink;
    m.size = 100;
    m.mtime_ns = 200;
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
  }
  SUBCASE("error_reply") {
    CHECK(encode_rep(7, proto::error_reply{errc::busy, "later"}) ==
          wire_builder{msg_type::error_reply}.u8(10).str("later").get());
  }
}

TEST_CASE("truncation at every offset fails cleanly") {
  const corpus c;
  for (const auto& wire : c.requests) {
    REQUIRE(decode_request(wire));
    for (std::size_t len = 0; len < wire.size(); ++len) {
      CAPTURE(wire.size());
      CAPTURE(len);
      std::span<const std::byte> prefix{wire.data(), len};
      bool ok = true;
      errc code = errc::ok;
      CHECK_NOTHROW([&] {
        auto r = decode_request(prefix);
        ok = static_cast<bool>(r);
        code = r.error();
      }());
      CHECK_FALSE(ok);
      CHECK(code == errc::malformed);
    }
  }
  for (const auto& wire : c.replies) {
    REQUIRE(decode_reply(wire));
    for (std::size_t len = 0; len < wire.size(); ++len) {
      CAPTURE(wire.size());
      CAPTURE(len);
      std::span<const std::byte> prefix{wire.data(), len};
      bool ok = true;
      errc code = errc::ok;
      CHECK_NOTHROW([&] {
        auto r = decode_reply(prefix);
        ok = static_cast<bool>(r);
        code = r.error();
      }());
      CHECK_FALSE(ok);
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
      for (std::size_t i = 0; i < count; ++i) w.str("e" + std::to_string(i)).u8(0).u64(i).i64(0);
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
  for (auto wire : c.requests) {
    REQUIRE(decode_request(wire));
    for (std::byte extra : {std::byte{0}, std::byte{0xff}}) {
      auto longer = wire;
      longer.push_back(extra);
      CAPTURE(wire.size());
      CHECK(decode_request(longer).error() == errc::malformed);
    }
  }
  for (auto wire : c.replies) {
    REQUIRE(decode_reply(wire));
    for (std::byte extra : {std::byte{0}, std::byte{0xff}}) {
      auto longer = wire;
      longer.push_back(extra);
      CAPTURE(wire.size());
      CHECK(decode_reply(longer).error() == errc::malformed);
    }
  }
}

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
    for (std::uint8_t v : {std::uint8_t{0}, std::uint8_t{2}, std::uint8_t{0xff}}) {
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
    std::span<const std::byte> only{request.data(), proto::header_size};
    CHECK(decode_request(only).error() == errc::malformed);
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
    for (std::uint8_t t : unknown) {
      CAPTURE(t);
      auto req = request;
      req[5] = std::byte{t};
      CHECK(decode_request(req).error() == errc::malformed);
      auto rep = reply;
      rep[5] = std::byte{t};
      CHECK(decode_reply(rep).error() == errc::malformed);
    }
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

TEST_CASE("a tampered data reply fails its checksum") {
  const bytes payload = pattern_payload(200, 6);
  // eof is false although the block reaches the end of the file, so flipping eof keeps the
  // offset/size consistency check satisfied and only the checksum can catch it.
  const auto v = version_of_size(8192 + 200);
  const auto good = encode_rep(1, make_data(8192, false, v, payload));
  REQUIRE(decode_reply(good));

  // Each tampered datagram is rejected, and the same fields with a freshly computed checksum
  // are accepted: the checksum, not some other check, is what rejects the tampering.
  SUBCASE("payload byte") {
    auto bad = good;
    bad[data_payload_at + 57] ^= std::byte{0x01};
    CHECK(decode_reply(bad).error() == errc::malformed);
    bytes changed = payload;
    changed[57] ^= std::byte{0x01};
    CHECK(decode_reply(encode_rep(1, make_data(8192, false, v, changed))));
  }
  SUBCASE("offset") {
    auto bad = good;
    bad[data_offset_at] ^= std::byte{0x01};  // 8192 -> 8193, still inside the file
    CHECK(decode_reply(bad).error() == errc::malformed);
    auto bigger = v;
    bigger.size += 1;
    CHECK(decode_reply(encode_rep(1, make_data(8192, false, bigger, payload))));
    CHECK(decode_reply(encode_rep(1, make_data(8191, false, v, payload))));
  }
  SUBCASE("eof flag") {
    auto bad = good;
    bad[data_eof_at] = std::byte{1};
    CHECK(decode_reply(bad).error() == errc::malformed);
    CHECK(decode_reply(encode_rep(1, make_data(8192, true, v, payload))));
  }
  SUBCASE("every version field") {
    for (std::size_t field = 0; field < 5; ++field) {
      CAPTURE(field);
      auto bad = good;
      bad[data_version_at + field * 8 + 1] ^= std::byte{0x01};
      CHECK(decode_reply(bad).error() == errc::malformed);
    }
    auto other = v;
    other.ino ^= 0x100;
    CHECK(decode_reply(encode_rep(1, make_data(8192, false, other, payload))));
  }
  SUBCASE("every single-bit flip in the body") {
    std::size_t accepted = 0;
    for (std::size_t i = proto::header_size; i < good.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto bad = good;
        bad[i] ^= std::byte(1u << bit);
        auto r = decode_reply(bad);
        if (r || r.error() != errc::malformed) {
          ++accepted;
          MESSAGE("flip accepted at byte " << i << " bit " << bit);
        }
      }
    }
    CHECK(accepted == 0);
  }
}

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
  SUBCASE("an empty eof block must sit exactly at the end") {
    CHECK(decode_reply(data_reply_wire(1000, 1, version_of_size(1000), 0, {}, {})));
    CHECK(decode_reply(data_reply_wire(999, 1, version_of_size(1000), 0, {}, {})).error() ==
          errc::malformed);
  }
}

// Blocked by a bug in common/codec.cpp (decode_body, the eof check): `m.offset + n` is computed
// in 64 bits and wraps, so a block whose offset lies far beyond the file passes the consistency
// check. Remove skip() once the check is written without overflow (e.g. n > size ||
// offset > size - n).
TEST_CASE("eof consistency does not wrap around 2^64" * doctest::skip()) {
  const bytes payload = pattern_payload(20, 8);
  const std::span<const std::byte> p{payload};
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  // offset + 20 wraps to 10, which equals the file size.
  CHECK(decode_reply(data_reply_wire(max - 9, 1, version_of_size(10), 20, p, p)).error() ==
        errc::malformed);
  // offset + 20 wraps to 19, which is inside a 1 MiB file.
  CHECK(decode_reply(data_reply_wire(max, 0, version_of_size(1 << 20), 20, p, p)).error() ==
        errc::malformed);
}

// Blocked by a bug in common/codec.cpp: codec.hpp promises errc::bad_request from the encoders
// for a message that "breaks a limit the decoder would enforce", but save_body does not check
// stat_reply::max_block, entry_type or errc ranges, or data_reply eof consistency, so each
// message below encodes and then fails decode_reply on the other end. Remove skip() once the
// encoders check what the decoder checks.
TEST_CASE("encoders refuse what decode_reply would reject" * doctest::skip()) {
  bytes out(proto::max_datagram);
  SUBCASE("stat_reply max_block outside [min_block_size, max_block_size]") {
    proto::stat_reply m;
    m.type = proto::entry_type::file;
    for (std::uint32_t max_block : {0u, proto::min_block_size - 1, proto::max_block_size + 1}) {
      CAPTURE(max_block);
      m.max_block = max_block;
      CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
    }
  }
  SUBCASE("entry_type and errc out of range") {
    proto::list_reply l;
    l.entries = {{"a", static_cast<proto::entry_type>(4), 1, 1}};
    CHECK(encode_reply(out, 1, l).error() == errc::bad_request);
    proto::stat_reply st;
    st.type = static_cast<proto::entry_type>(4);
    st.max_block = proto::max_block_size;
    CHECK(encode_reply(out, 1, st).error() == errc::bad_request);
    CHECK(encode_reply(out, 1, proto::error_reply{static_cast<errc>(13), ""}).error() ==
          errc::bad_request);
  }
  SUBCASE("data_reply whose eof disagrees with offset + length and the file size") {
    CHECK(encode_reply(out, 1, make_data(10, true, version_of_size(5), bytes{})).error() ==
          errc::bad_request);
    CHECK(encode_reply(out, 1, make_data(10, false, version_of_size(5), bytes(1))).error() ==
          errc::bad_request);
  }
}

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

// Property of both fuzz tests: decoding never throws (decode_* are noexcept, so a throw would
// terminate the run), and whatever decodes re-encodes to the same bytes apart from the reserved
// flags, so nothing the encoder would refuse survives decoding.
struct fuzz_checker {
  std::size_t decoded = 0;
  std::size_t bad_reencode = 0;

  void check(std::span<const std::byte> wire) {
    if (auto r = decode_request(wire)) {
      ++decoded;
      const auto re = reencode_request(*r, wire);
      if (!re.ok || !re.same) ++bad_reencode;
    }
    if (auto r = decode_reply(wire)) {
      ++decoded;
      const auto re = reencode_reply(*r, wire);
      if (!re.ok || !re.same) ++bad_reencode;
    }
  }
};

TEST_CASE("200,000 seeded random datagrams never crash the decoders") {
  std::mt19937_64 rng{0x5eed'f0e1'2024'0001ULL};
  const msg_type types[] = {msg_type::list_request, msg_type::stat_request, msg_type::get_request,
                            msg_type::list_reply,   msg_type::stat_reply,   msg_type::data_reply,
                            msg_type::error_reply};
  fuzz_checker fuzz;
  bytes wire;
  for (int i = 0; i < 200'000; ++i) {
    wire.resize(static_cast<std::size_t>(rng() % 2001));
    for (std::size_t k = 0; k < wire.size(); k += 8) {  // eight random bytes per draw
      auto word = rng();
      for (std::size_t j = k; j < std::min(k + 8, wire.size()); ++j, word >>= 8)
        wire[j] = std::byte(word & 0xff);
    }
    // Two in three get a valid header and endianness byte, so the body parsers are reached
    // rather than every datagram stopping at the magic check.
    if (i % 3 != 0 && wire.size() > proto::header_size) {
      for (std::size_t k = 0; k < proto::magic.size(); ++k) wire[k] = std::byte{proto::magic[k]};
      wire[4] = std::byte{proto::version};
      wire[5] = std::byte{static_cast<std::uint8_t>(types[rng() % std::size(types)])};
      wire[proto::header_size] = std::byte{1};
    }
    fuzz.check(wire);
  }
  CHECK(fuzz.bad_reencode == 0);
}

TEST_CASE("50,000 seeded mutations of valid encodings never crash the decoders") {
  std::mt19937_64 rng{0x5eed'f0e1'2024'0002ULL};
  auto byte_of = [&] { return std::byte(rng() & 0xff); };
  const corpus c;
  std::vector<const bytes*> seeds;
  for (const auto& w : c.requests) seeds.push_back(&w);
  for (const auto& w : c.replies) seeds.push_back(&w);
  fuzz_checker fuzz;
  for (int i = 0; i < 50'000; ++i) {
    bytes wire = *seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 5) {
        case 0:  // flip bits in one byte
          if (!wire.empty()) wire[rng() % wire.size()] ^= std::byte(1 + rng() % 255);
          break;
        case 1:  // overwrite one byte
          if (!wire.empty()) wire[rng() % wire.size()] = byte_of();
          break;
        case 2:  // truncate
          wire.resize(wire.empty() ? 0 : rng() % wire.size());
          break;
        case 3:  // extend
          for (auto n = rng() % 16 + 1; n > 0; --n) wire.push_back(byte_of());
          break;
        default:  // a small value in the body, where length tags, enums and bools live
          if (wire.size() > proto::header_size + 1)
            wire[proto::header_size + 1 + rng() % (wire.size() - proto::header_size - 1)] =
                std::byte(rng() % 4);
          break;
      }
    }
    fuzz.check(wire);
  }
  CHECK(fuzz.bad_reencode == 0);
  // Some mutants (a changed request id, say) must decode, or the re-encode check above
  // checked nothing.
  CHECK(fuzz.decoded > 0);
}

TEST_CASE("encoders reject input over the limits the decoder enforces") {
  bytes out(proto::max_datagram);
  const std::string long_path(proto::max_path + 1, 'p');
  SUBCASE("path longer than max_path") {
    CHECK(encode_request(out, 1, proto::list_request{long_path, ""}).error() == errc::bad_request);
    CHECK(encode_request(out, 1, proto::stat_request{long_path}).error() == errc::bad_request);
    CHECK(encode_request(out, 1, proto::get_request{long_path, 0, 512}).error() ==
          errc::bad_request);
    CHECK(encode_request(out, 1, proto::stat_request{std::string(proto::max_path, 'p')}));
  }
  SUBCASE("cursor longer than max_name") {
    CHECK(encode_request(out, 1, proto::list_request{"", std::string(proto::max_name + 1, 'c')})
              .error() == errc::bad_request);
  }
  SUBCASE("more than max_list_entries entries") {
    proto::list_reply m;
    for (std::size_t i = 0; i < proto::max_list_entries; ++i)
      m.entries.push_back({"e" + std::to_string(i), proto::entry_type::file, i, 0});
    CHECK(encode_reply(out, 1, m));
    m.entries.push_back({"one-more", proto::entry_type::file, 0, 0});
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("entry name longer than max_name") {
    proto::list_reply m;
    m.entries = {{std::string(proto::max_name + 1, 'n'), proto::entry_type::file, 0, 0}};
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("error message longer than max_message") {
    CHECK(encode_reply(out, 1,
                       proto::error_reply{errc::io_error, std::string(proto::max_message + 1, 'm')})
              .error() == errc::bad_request);
  }
  SUBCASE("data payload longer than max_block_size") {
    const bytes payload(proto::max_block_size + 1);
    const auto m = make_data(0, false, version_of_size(10 * four_gib), payload);
    CHECK(encode_reply(out, 1, m).error() == errc::bad_request);
  }
  SUBCASE("an output buffer too small, at every size") {
    const corpus c;
    for (const auto& wire : c.requests) {
      auto r = decode_request(wire);
      REQUIRE(r);
      for (std::size_t size = 0; size < wire.size(); ++size) {
        CAPTURE(size);
        bytes small(size);
        CHECK(encode_request(small, 1, r->body).error() == errc::bad_request);
      }
      bytes exact(wire.size());
      CHECK(encode_request(exact, r->hdr.request_id, r->body));
      CHECK(exact == wire);
    }
    for (const auto& wire : c.replies) {
      auto r = decode_reply(wire);
      REQUIRE(r);
      for (std::size_t size = 0; size < wire.size(); ++size) {
        CAPTURE(size);
        bytes small(size);
        CHECK(encode_reply(small, 1, r->body).error() == errc::bad_request);
      }
      bytes exact(wire.size());
      CHECK(encode_reply(exact, r->hdr.request_id, r->body));
      CHECK(exact == wire);
    }
  }
}

TEST_SUITE_END();
