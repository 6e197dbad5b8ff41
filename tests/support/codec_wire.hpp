#pragma once

// The codec tests' shared vocabulary: the wire offsets of PROTOCOL.md, the checksums computed with
// xxhash.h directly, wire_builder for writing datagrams by hand, and one valid encoding of every
// message (corpus). Header-only, so unit_tests needs no extra source.
//
// Hostile inputs built by hand carry a valid checksum, so a test that expects errc::malformed
// proves the structural check rejects them, not the checksum; errc::corrupt is what a checksum
// mismatch decodes to.

#include <doctest/doctest.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/encode.hpp"

namespace ferry::test {

namespace proto = ferry::protocol;
using ferry::protocol::errc;
using ferry::protocol::msg_type;
using bytes = std::vector<std::byte>;

inline constexpr std::uint64_t four_gib = std::uint64_t{1} << 32;

// Byte offsets of a data reply's fields, from the layout in PROTOCOL.md (header, endianness
// byte, offset, eof, five version fields, checksum, payload length tag, payload).
inline constexpr std::size_t data_endian_at = proto::header_size;
inline constexpr std::size_t data_offset_at = data_endian_at + 1;
inline constexpr std::size_t data_eof_at = data_offset_at + 8;
inline constexpr std::size_t data_version_at = data_eof_at + 1;
inline constexpr std::size_t data_checksum_at = data_version_at + 40;
inline constexpr std::size_t data_tag_at = data_checksum_at + 8;
inline constexpr std::size_t data_payload_at = data_tag_at + 8;
static_assert(data_payload_at == proto::data_reply_overhead);

// The shortest non-data datagram with room for its trailing checksum: header, endianness byte,
// checksum.
inline constexpr std::size_t min_sealed_size = proto::header_size + 1 + proto::checksum_size;

inline bytes pattern_payload(std::size_t n, unsigned seed) {
  bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte((i * 31u + seed) & 0xffu);
  return b;
}

inline void put_le64(std::span<std::byte> b, std::size_t at, std::uint64_t v) {
  for (std::size_t i = 0; i < 8; ++i, v >>= 8) b[at + i] = std::byte(v & 0xff);
}
inline std::uint64_t get_le64(std::span<const std::byte> b, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 8; i-- > 0;) v = (v << 8) | std::to_integer<std::uint64_t>(b[at + i]);
  return v;
}

// The checksums of PROTOCOL.md, computed here with xxhash.h directly, not through the codec.
inline std::uint64_t trailing_checksum(std::span<const std::byte> before) {
  return XXH3_64bits(before.data(), before.size());
}
inline std::uint64_t data_checksum(std::span<const std::byte> before,
                                   std::span<const std::byte> payload) {
  return XXH3_64bits_withSeed(payload.data(), payload.size(),
                              XXH3_64bits(before.data(), before.size()));
}

inline bool has_data_type(std::span<const std::byte> w) {
  return w.size() > 5 && w[5] == std::byte{static_cast<std::uint8_t>(msg_type::data_reply)};
}

// Rewrites the checksum of `w` to match its other bytes, as an encoder would: for a data reply
// (by its type byte) the field at data_checksum_at, over everything after data_payload_at as
// the payload; for anything else the last eight bytes. False if `w` is too short to hold one.
inline bool reseal(bytes& w) {
  if (has_data_type(w)) {
    if (w.size() < data_payload_at) return false;
    const std::span<const std::byte> all{w};
    put_le64(w, data_checksum_at,
             data_checksum(all.first(data_checksum_at), all.subspan(data_payload_at)));
    return true;
  }
  if (w.size() < min_sealed_size) return false;
  const auto n = w.size() - proto::checksum_size;
  put_le64(w, n, trailing_checksum(std::span<const std::byte>{w}.first(n)));
  return true;
}
inline bytes resealed(bytes w) {
  REQUIRE(reseal(w));
  return w;
}

// What an encoder writes for whatever `w` decodes to: the same bytes with the reserved flags
// zeroed and, since the checksum covers the flags, the checksum recomputed.
inline bytes normalised(std::span<const std::byte> w) {
  bytes out{w.begin(), w.end()};
  out[6] = out[7] = std::byte{0};
  reseal(out);
  return out;
}

inline bytes encode_rep(std::uint64_t id, const proto::reply& body) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_reply(out, id, body);
  REQUIRE(n);
  out.resize(*n);
  return out;
}

// A data reply carrying `payload` (which must outlive it).
inline proto::data_reply make_data(std::uint64_t offset, bool eof, const proto::file_version& v,
                                   const bytes& payload) {
  proto::data_reply d;
  d.offset = offset;
  d.eof = eof;
  d.version = v;
  d.payload = payload.data();
  d.length = static_cast<std::uint32_t>(payload.size());
  return d;
}

inline proto::file_version version_of_size(std::uint64_t size) {
  return proto::file_version{0x0801, 0xabcdef12345, size, 1'700'000'000'123'456'789,
                             1'700'000'001'000'000'000};
}

// Writes datagrams by hand, following the layout PROTOCOL.md documents: a 16-byte big-endian
// header, then cereal's portable binary body (endianness byte 1, little-endian integers,
// 64-bit length tags), then the checksum. get() ends every message but a data reply with the
// XXH3-64 of all its bytes; a data reply gets its checksum from data_checksum(), written where
// the layout puts it. The "matches the encoder" test (codec_layout_test.cpp) proves the builder
// agrees with the codec byte for byte, so the hostile inputs built with it differ from valid ones
// only where a test says so, and always carry a valid checksum.
class wire_builder {
 public:
  explicit wire_builder(msg_type type, std::uint64_t request_id = 7, std::uint8_t endianness = 1)
      : type_{type} {
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
  wire_builder& u16(std::uint16_t v) {
    for (int i = 0; i < 2; ++i, v = static_cast<std::uint16_t>(v >> 8))
      b_.push_back(std::byte(v & 0xff));
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
  // A data reply's checksum: XXH3-64 of `payload`, seeded with XXH3-64 of every byte so far.
  // `payload` need not be the payload that follows, so a test can make them differ.
  wire_builder& data_checksum(std::span<const std::byte> payload) {
    return u64(ferry::test::data_checksum(b_, payload));
  }
  // The datagram; unless it is a data reply, followed by XXH3-64 of all the bytes before.
  [[nodiscard]] bytes get() const {
    bytes out = b_;
    if (type_ != msg_type::data_reply) {
      out.resize(out.size() + proto::checksum_size);
      put_le64(out, b_.size(), trailing_checksum(b_));
    }
    return out;
  }
  // The bytes so far, with no checksum appended.
  [[nodiscard]] const bytes& unsealed() const { return b_; }

 private:
  msg_type type_;
  bytes b_;
};

// A list reply with one entry, written by hand so any field can be out of range: mode 0644 and
// no target unless given.
inline bytes list_reply_wire(std::string_view name, std::uint8_t type = 0, std::uint8_t end = 1,
                             std::uint16_t mode = 0644, std::string_view target = {}) {
  return wire_builder{msg_type::list_reply}
      .u64(1)
      .str(name)
      .u8(type)
      .u64(10)
      .i64(20)
      .u16(mode)
      .str(target)
      .u8(end)
      .get();
}

inline bytes stat_reply_wire(std::uint8_t type, std::uint32_t max_block, std::uint8_t ready,
                             std::uint16_t mode = 0755) {
  return wire_builder{msg_type::stat_reply}
      .u8(type)
      .u64(100)
      .i64(200)
      .u16(mode)
      .version(version_of_size(100))
      .u32(max_block)
      .u8(ready)
      .u64(1)
      .u64(2)
      .get();
}

// A data reply written by hand; the checksum covers `checksum_payload` (the real payload unless a
// test wants them to differ).
inline bytes data_reply_wire(std::uint64_t offset, std::uint8_t eof, const proto::file_version& v,
                             std::uint64_t tag, std::span<const std::byte> payload,
                             std::span<const std::byte> checksum_payload,
                             std::uint64_t request_id = 7) {
  return wire_builder{msg_type::data_reply, request_id}
      .u64(offset)
      .u8(eof)
      .version(v)
      .data_checksum(checksum_payload)
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
    list.entries = {{"a.txt", proto::entry_type::file, 10, 5, 0644, ""},
                    {"dir", proto::entry_type::dir, 0, -1, 07755, ""},
                    {"link", proto::entry_type::symlink, 3, 0, 0777, "a.txt"}};
    list.end = true;
    replies.push_back(encode_rep(5, list));
    replies.push_back(encode_rep(6, proto::list_reply{}));
    proto::stat_reply st;
    st.type = proto::entry_type::file;
    st.size = 6 * four_gib;
    st.mtime_ns = 123;
    st.mode = 04755;
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

  // Every message that ends with the trailing checksum, and whether it is a request.
  [[nodiscard]] std::vector<std::pair<const bytes*, bool>> sealed() const {
    std::vector<std::pair<const bytes*, bool>> out;
    for (const auto& w : requests) out.emplace_back(&w, true);
    for (const auto& w : replies)
      if (!has_data_type(w)) out.emplace_back(&w, false);
    return out;
  }
  [[nodiscard]] std::vector<const bytes*> data() const {
    std::vector<const bytes*> out;
    for (const auto& w : replies)
      if (has_data_type(w)) out.push_back(&w);
    return out;
  }
};

// Decodes `w` as a request or a reply and returns only the error code (ok if it decoded).
inline errc decode_code(std::span<const std::byte> w, bool request) {
  return request ? ferry::codec::decode_request(w).error() : ferry::codec::decode_reply(w).error();
}

inline bool in(errc e, std::initializer_list<errc> set) {
  return std::find(set.begin(), set.end(), e) != set.end();
}

// True if the decoded message re-encodes to exactly normalised(wire).
inline bool reencodes_same(const ferry::codec::decoded_request& d,
                           std::span<const std::byte> wire) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_request(out, d.hdr.request_id, d.body);
  if (!n) return false;
  out.resize(*n);
  return out == normalised(wire);
}

inline bool reencodes_same(const ferry::codec::decoded_reply& d, std::span<const std::byte> wire) {
  bytes out(proto::max_datagram);
  auto n = ferry::codec::encode_reply(out, d.hdr.request_id, d.body);
  if (!n) return false;
  out.resize(*n);
  return out == normalised(wire);
}

using ferry::codec::decode_header;
using ferry::codec::decode_reply;
using ferry::codec::decode_request;
using ferry::codec::encode_data_prefix;
using ferry::codec::encode_reply;
using ferry::codec::encode_request;
using ferry::codec::peek_request_id;

}  // namespace ferry::test
