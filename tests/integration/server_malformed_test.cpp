// Malformed traffic through a live server: garbage, damaged and reply-typed datagrams are
// counted and dropped, and only a request recognisably ferry's is answered with an error.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/encode.hpp"
#include "support/running_server.hpp"
#include "support/traffic.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::protocol::entry_type;
using ferry::protocol::errc;
using namespace ferry::test;
using bytes = std::vector<std::byte>;

}  // namespace

TEST_SUITE_BEGIN("server");

// --- malformed traffic -----------------------------------------------------------------------
//
// PROTOCOL.md, "Rules for untrusted bytes": the server drops and counts every datagram that does
// not decode, and answers with an error only a request whose header is recognisably ferry's and
// whose checksum matches (or, with unsupported_version, a request-typed header of another
// version). Garbage, damaged datagrams and reply-typed datagrams never draw a reply.

TEST_CASE("malformed datagrams are counted, dropped, and answered only when recognisably ours") {
  temp_dir root;
  root.write("f.txt", "still served");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  traffic t{srv, cli};

  SUBCASE("empty, 1-byte and short-header datagrams get no reply") {
    t.send({});
    t.send({std::byte{0x46}});
    auto header = blocking_client::encode(1, proto::stat_request{"f.txt"});
    header.resize(proto::header_size - 1);
    t.send(header);  // one byte short of a header, magic and version intact
    t.send(bytes(proto::header_size, std::byte{0}));
    t.wait_received();
    t.expect_served();
    t.check_counters(4, 0, 0);
  }
  SUBCASE("a truncated or extended request fails its checksum: dropped, no reply") {
    const auto full = blocking_client::encode(77, proto::get_request{"f.txt", 0, 512});
    std::uint64_t n = 0;
    // From the shortest length that can hold a checksum (header, endianness byte, checksum).
    for (std::size_t cut = proto::header_size + 1 + proto::checksum_size; cut < full.size();
         ++cut) {
      t.send(bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut)));
      ++n;
    }
    auto longer = full;
    longer.push_back(std::byte{0});
    t.send(longer);
    ++n;
    t.wait_received();
    t.expect_served();
    t.check_counters(0, n, 0);
  }
  SUBCASE("a request damaged in its id, flags or body fails its checksum: dropped, no reply") {
    const auto good = blocking_client::encode(78, proto::get_request{"f.txt", 0, 512});
    std::uint64_t n = 0;
    for (std::size_t at = 6; at < good.size(); ++at) {
      if (at == proto::header_size) continue;  // the endianness byte: see the skipped case below
      for (const unsigned bit : {0u, 7u}) {
        auto damaged = good;
        damaged[at] ^= std::byte(1u << bit);
        t.send(damaged);
        ++n;
      }
    }
    t.wait_received();
    t.expect_served();
    t.check_counters(0, n, 0);
  }
  SUBCASE("a wrong protocol version gets error_reply(unsupported_version) with its id") {
    for (const std::uint8_t v :
         {std::uint8_t{0}, std::uint8_t{1}, std::uint8_t{3}, std::uint8_t{255}}) {
      CAPTURE(v);
      auto w = blocking_client::encode(55 + v, proto::stat_request{"f.txt"});
      w[4] = std::byte{v};
      t.send(w);
      t.expect_error(55 + v, errc::unsupported_version);
    }
    // Not when it is reply-typed, though: see "reply-typed datagrams" below.
    auto reply_typed = blocking_client::encode(60, proto::stat_request{"f.txt"});
    reply_typed[4] = std::byte{3};
    reply_typed[5] = std::byte{0x82};
    t.send(reply_typed);
    t.wait_received();
    t.expect_served();
    t.check_counters(5, 0, 4);
  }
  SUBCASE("a request with a matching checksum but bad content gets the decoder's error") {
    auto zero_block = unsealed(66, proto::get_request{"f.txt", 0, 512});
    std::fill(zero_block.end() - 4, zero_block.end(), std::byte{0});  // block_size 0
    t.send(sealed(zero_block));
    t.expect_error(66, errc::bad_request);

    auto unknown_type = unsealed(67, proto::stat_request{"f.txt"});
    unknown_type[5] = std::byte{0x05};
    t.send(sealed(unknown_type));
    t.expect_error(67, errc::malformed);

    auto trailing = unsealed(68, proto::stat_request{"f.txt"});
    trailing.push_back(std::byte{0});
    t.send(sealed(trailing));
    t.expect_error(68, errc::malformed);

    auto big_endian = unsealed(69, proto::stat_request{"f.txt"});
    big_endian[proto::header_size] = std::byte{0};
    t.send(sealed(big_endian));
    t.expect_error(69, errc::malformed);

    auto long_path = unsealed(70, proto::stat_request{"f.txt"});
    // The path's length tag (eight bytes after the endianness byte) says 2^40: bounded before
    // anything is allocated.
    long_path[proto::header_size + 1 + 5] = std::byte{1};
    t.send(sealed(long_path));
    t.expect_error(70, errc::malformed);

    t.expect_served();
    t.check_counters(5, 0, 5);
  }
  SUBCASE("oversized datagrams get no reply, even with a valid header and checksum") {
    auto big = unsealed(9, proto::get_request{"f.txt", 0, 512});
    big.resize(60 * 1024 - 8, std::byte{0xab});
    t.send(big);
    t.send(sealed(big));
    t.send(as_bytes(random_bytes(60 * 1024, 3)));
    auto over = unsealed(10, proto::stat_request{"f.txt"});
    over.resize(proto::max_request_size + 1 - 8, std::byte{0});
    t.send(sealed(over));
    // At exactly max_request_size the datagram is decoded, and its padding is trailing bytes.
    auto at_limit = unsealed(11, proto::stat_request{"f.txt"});
    at_limit.resize(proto::max_request_size - 8, std::byte{0});
    t.send(sealed(at_limit));
    REQUIRE(t.sent == 5);
    t.expect_error(11, errc::malformed);
    t.wait_received();
    t.expect_served();
    // Longer than any request, the first four are cut short on receipt and never decoded.
    t.check_counters(1, 0, 1, 4);
  }
  SUBCASE("reply-typed datagrams are never answered, however valid") {
    const std::byte payload[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
    proto::data_reply data;
    data.offset = 0;
    data.eof = true;
    data.version.size = 3;
    data.payload = payload;
    data.length = 3;
    proto::stat_reply st;
    st.max_block = proto::max_block_size;
    const std::vector<proto::reply> replies = {
        proto::list_reply{{{"a", proto::entry_type::file, 1, 2}}, true}, st, data,
        proto::error_reply{errc::not_found, "no"}};
    for (const auto& r : replies) {
      bytes w(proto::max_datagram);
      auto n = ferry::codec::encode_reply(w, 90, r);
      REQUIRE(n);
      w.resize(*n);
      t.send(w);
      w[4] = std::byte{3};  // and from another version
      t.send(w);
    }
    t.wait_received();
    t.expect_served();
    t.check_counters(8, 0, 0);
  }
  SUBCASE("10,000 datagrams of random garbage: no reply at all") {
    std::mt19937_64 gen{20'240'611};
    std::uint64_t ours = 0;  // datagrams that happen to start like a ferry header
    for (int batch = 0; batch < 20; ++batch) {
      for (int i = 0; i < 500; ++i) {
        auto b = as_bytes(random_bytes(gen() % 2001, gen()));
        const auto h = ferry::codec::decode_header(b);
        if (h || h.error() == errc::unsupported_version) ++ours;
        t.send(b);
      }
      t.wait_received();  // in batches, so the socket buffer never overflows
    }
    REQUIRE(ours == 0);  // the seed gives none; with one the counts below would not hold
    t.expect_served();
    t.check_counters(10'000, 0, 0);
  }
  SUBCASE("garbage behind a valid request header: dropped unless its checksum matches") {
    std::mt19937_64 gen{77};
    std::uint64_t answered = 0, corrupt = 0;
    for (int batch = 0; batch < 20; ++batch) {
      std::vector<std::pair<std::uint64_t, errc>> expected;
      for (int i = 0; i < 100; ++i) {
        const std::uint64_t id = 1'000'000 + 1000 * static_cast<std::uint64_t>(batch) + 2 * i;
        auto b = unsealed(id, proto::stat_request{"f.txt"});
        b.resize(proto::header_size);
        b[5] = std::byte{static_cast<std::uint8_t>(1 + gen() % 3)};   // LIST, STAT or GET
        auto body = as_bytes(random_bytes(9 + gen() % 1500, gen()));  // room for a checksum
        body[0] = std::byte{1};                                       // the endianness byte
        b.insert(b.end(), body.begin(), body.end());
        // Random bytes where the checksum belongs: damaged, never answered.
        t.send(b);
        ++corrupt;
        // The same garbage with a matching checksum: answered with what the decoder finds.
        auto resealed = b;
        strip_checksum(resealed);
        resealed[8 + 7] = std::byte(std::to_integer<unsigned>(resealed[8 + 7]) + 1);  // id + 1
        append_checksum(resealed);
        const auto decoded = ferry::codec::decode_request(resealed);
        REQUIRE(decoded.error() != errc::corrupt);
        if (decoded) continue;  // a valid request by chance: not garbage
        expected.emplace_back(id + 1, decoded.error());
        t.send(resealed);
      }
      for (const auto& [id, code] : expected) t.expect_error(id, code);
      answered += expected.size();
    }
    CHECK(answered > 1000);
    t.wait_received();
    t.expect_served();
    t.check_counters(answered, corrupt, answered);
  }
}

TEST_CASE("damaged requests never draw a reply, whichever byte is damaged") {
  // A request damaged in its type byte, its endianness byte, or cut too short to hold a
  // checksum must fail the checksum, which is verified before anything else is believed.
  temp_dir root;
  root.write("f.txt", "still served");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  traffic t{srv, cli};
  const auto good = blocking_client::encode(80, proto::get_request{"f.txt", 0, 512});
  auto type_damaged = good;
  type_damaged[5] ^= std::byte{0x04};  // GET (0x03) becomes 0x07, still request-typed
  t.send(type_damaged);
  auto endian_damaged = good;
  endian_damaged[proto::header_size] ^= std::byte{0x80};
  t.send(endian_damaged);
  for (std::size_t cut = proto::header_size; cut < proto::header_size + 1 + proto::checksum_size;
       ++cut)
    t.send(bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
  t.wait_received();
  t.expect_served();
  t.check_counters(0, t.sent, 0);
}

TEST_CASE("an oversized request of another version gets no reply either") {
  // PROTOCOL.md: a datagram over 8192 bytes is dropped before parsing, whatever its version.
  temp_dir root;
  root.write("f.txt", "still served");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  traffic t{srv, cli};
  auto big = blocking_client::encode(12, proto::stat_request{"f.txt"});
  big[4] = std::byte{3};
  big.resize(60 * 1024, std::byte{0});
  t.send(big);
  t.wait_received();
  t.expect_served();
  t.check_counters(0, 0, 0, 1);  // cut short on receipt, never parsed
}

TEST_SUITE_END();
