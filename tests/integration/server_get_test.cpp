// GET through a live server: the block asked for with eof and the file's version, block_size
// capped at max_block, and full 64-bit offsets into a sparse 5 GiB file.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/protocol.hpp"
#include "support/file_facts.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::protocol::errc;
using namespace ferry::test;

constexpr std::uint64_t gib = std::uint64_t{1} << 30;

}  // namespace

TEST_SUITE_BEGIN("server");

// --- GET -------------------------------------------------------------------------------------

TEST_CASE("GET serves the block asked for, with eof and the file's version") {
  temp_dir root;
  constexpr std::size_t size = 10 * 1000 + 123;
  const auto content = root.write_random("f.bin", size, 11);
  root.write("empty", "");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  const auto version = version_of(root / "f.bin");

  auto check_block = [&](std::uint64_t offset, std::uint32_t block_size, std::uint32_t length,
                         bool eof) {
    CAPTURE(offset);
    CAPTURE(block_size);
    auto b = cli.get("f.bin", offset, block_size);
    REQUIRE(b);
    CHECK(b->meta.offset == offset);
    CHECK(b->meta.length == length);
    CHECK(b->meta.eof == eof);
    CHECK(b->meta.version == version);
    REQUIRE(b->data.size() == length);
    CHECK(b->data == content.substr(offset, length));
  };

  SUBCASE("the first block") { check_block(0, 1000, 1000, false); }
  SUBCASE("middle blocks, aligned or not") {
    check_block(5000, 1000, 1000, false);
    check_block(4321, 1000, 1000, false);
    check_block(1, 1, 1, false);
  }
  SUBCASE("the last block is short and has eof") { check_block(10'000, 1000, 123, true); }
  SUBCASE("a block that ends exactly at the end has eof") { check_block(9123, 1000, 1000, true); }
  SUBCASE("offset == size: empty, with eof") { check_block(size, 1000, 0, true); }
  SUBCASE("offset beyond the end: bad_request") {
    CHECK(cli.get("f.bin", size + 1, 1000).error() == errc::bad_request);
    CHECK(cli.get("f.bin", std::numeric_limits<std::uint64_t>::max(), 1000).error() ==
          errc::bad_request);
  }
  SUBCASE("the whole file, block by block") {
    std::string got;
    for (std::uint64_t offset = 0; offset < size; offset += 1000) {
      auto b = cli.get("f.bin", offset, 1000);
      REQUIRE(b);
      CHECK(b->meta.eof == (offset + 1000 >= size));
      got += b->data;
    }
    CHECK(got.size() == size);
    CHECK(got == content);
  }
  SUBCASE("an empty file") {
    auto b = cli.get("empty", 0, 512);
    REQUIRE(b);
    CHECK(b->meta.length == 0);
    CHECK(b->meta.eof);
    CHECK(b->meta.version.size == 0);
    CHECK(cli.get("empty", 1, 512).error() == errc::bad_request);
  }
  SUBCASE("what is not there") {
    CHECK(cli.get("missing", 0, 512).error() == errc::not_found);
    CHECK(cli.get("f.bin/x", 0, 512).error() == errc::not_directory);
  }
  const auto c = srv.counter_snapshot();
  CHECK(c.internal_errors == 0);
  CHECK(c.dropped_malformed == 0);
  CHECK(cli.stray() == 0);
}

TEST_CASE("GET caps block_size at the server's max_block") {
  temp_dir root;
  const auto content = root.write_random("big.bin", 200'000, 5);

  auto check_cap = [&](running_server& srv, std::uint32_t cap) {
    blocking_client cli{srv.endpoint()};
    auto st = cli.stat("big.bin");
    REQUIRE(st);
    CHECK(st->max_block == cap);
    for (const std::uint32_t ask :
         {cap, cap + 1, 70'000u, std::numeric_limits<std::uint32_t>::max()}) {
      CAPTURE(ask);
      auto b = cli.get("big.bin", 0, ask);
      REQUIRE(b);
      CHECK(b->meta.length == cap);
      CHECK(b->data == content.substr(0, cap));
    }
    // Smaller than the cap is served as asked, even below min_block_size.
    auto small = cli.get("big.bin", 100, 7);
    REQUIRE(small);
    CHECK(small->data == content.substr(100, 7));
  };

  SUBCASE("the default cap is max_block_size") {
    running_server srv{root.path()};
    check_cap(srv, proto::max_block_size);
  }
  SUBCASE("a configured cap of 4096") {
    running_server srv{root.path(), [](auto& c) { c.max_block = 4096; }};
    check_cap(srv, 4096);
  }
  SUBCASE("a configured cap outside the protocol's range is clamped") {
    running_server low{root.path(), [](auto& c) { c.max_block = 100; }};
    check_cap(low, proto::min_block_size);
    running_server high{root.path(), [](auto& c) { c.max_block = 1u << 20; }};
    check_cap(high, proto::max_block_size);
  }
}

TEST_CASE("GET uses full 64-bit offsets: a sparse 5 GiB file") {
  temp_dir root;
  constexpr std::uint64_t size = 5 * gib;
  constexpr std::uint64_t high = 4 * gib + gib / 2;  // 4.5 GiB
  constexpr std::uint64_t low = high - 4 * gib;      // where a 32-bit offset would land
  root.write_sparse("sparse.bin", size);
  root.write_at("sparse.bin", high, "HIGH-MARKER");
  root.write_at("sparse.bin", low, "low--marker");
  root.write_at("sparse.bin", size - 5, "TAIL!");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  // No STAT here: it would start a digest of all 5 GiB.

  auto b = cli.get("sparse.bin", high, 512);
  REQUIRE(b);
  CHECK(b->meta.offset == high);
  CHECK(b->meta.length == 512);
  CHECK_FALSE(b->meta.eof);
  CHECK(b->meta.version.size == size);
  CHECK(b->data == "HIGH-MARKER" + std::string(512 - 11, '\0'));

  auto l = cli.get("sparse.bin", low, 11);
  REQUIRE(l);
  CHECK(l->data == "low--marker");

  auto hole = cli.get("sparse.bin", 4 * gib, 4096);
  REQUIRE(hole);
  CHECK(hole->data == std::string(4096, '\0'));

  auto tail = cli.get("sparse.bin", size - 5, 4096);
  REQUIRE(tail);
  CHECK(tail->data == "TAIL!");
  CHECK(tail->meta.eof);

  auto end = cli.get("sparse.bin", size, 4096);
  REQUIRE(end);
  CHECK(end->meta.length == 0);
  CHECK(end->meta.eof);

  CHECK(cli.get("sparse.bin", size + 1, 4096).error() == errc::bad_request);
  CHECK(cli.get("sparse.bin", size + 4 * gib, 4096).error() == errc::bad_request);
}

TEST_SUITE_END();
