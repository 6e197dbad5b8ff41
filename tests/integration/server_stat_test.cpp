// STAT through a live server: type, size and version, then the XXH3-128 digest.

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/protocol.hpp"
#include "support/file_facts.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::protocol::entry_type;
using ferry::protocol::errc;
using namespace ferry::test;

}  // namespace

TEST_SUITE_BEGIN("server");

// --- STAT ------------------------------------------------------------------------------------

TEST_CASE("STAT reports type, size and version, then the XXH3-128 digest") {
  temp_dir root;
  const auto content = root.write_random("data.bin", 300'000, 7);
  root.write("empty", "");
  root.mkdir("dir");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};

  // STATs until the digest is ready; returns the last reply.
  auto poll_digest = [&](const std::string& path) {
    auto last = cli.stat(path);
    REQUIRE(last);
    const bool ready = wait_until([&] {
      last = cli.stat(path);
      REQUIRE(last);
      return last->digest_ready;
    });
    REQUIRE(ready);
    return *last;
  };

  SUBCASE("a regular file") {
    const auto st = lstat_of(root / "data.bin");
    auto first = cli.stat("data.bin");
    REQUIRE(first);
    CHECK(first->type == entry_type::file);
    CHECK(first->size == 300'000);
    CHECK(first->mtime_ns == ns_of(st.st_mtim));
    CHECK(first->version == version_of(root / "data.bin"));
    CHECK(first->max_block == proto::max_block_size);
    CHECK_FALSE(first->digest_ready);  // computed off the loop, once per version

    const auto ready = poll_digest("data.bin");
    CHECK(ready.digest == xxh3_128(content));
    CHECK(ready.version == first->version);
    CHECK(srv.counters().digests_computed.load() == 1);

    // Cached: the next STAT has it at once, and nothing is hashed again.
    auto again = cli.stat("data.bin");
    REQUIRE(again);
    CHECK(again->digest_ready);
    CHECK(again->digest == xxh3_128(content));
    CHECK(srv.counters().digests_computed.load() == 1);
  }
  SUBCASE("an empty file") {
    const auto ready = poll_digest("empty");
    CHECK(ready.type == entry_type::file);
    CHECK(ready.size == 0);
    CHECK(ready.digest == xxh3_128(""));
  }
  SUBCASE("a file that changes gets a new version and a new digest") {
    const auto before = poll_digest("data.bin");
    const auto changed = random_bytes(content.size(), 8);
    root.overwrite_in_place("data.bin", changed);
    auto now = cli.stat("data.bin");
    REQUIRE(now);
    CHECK(now->version != before.version);
    CHECK(now->version == version_of(root / "data.bin"));
    const auto after = poll_digest("data.bin");
    CHECK(after.digest == xxh3_128(changed));
    CHECK(after.digest != before.digest);
  }
  SUBCASE("a directory") {
    const auto st = lstat_of(root / "dir");
    for (const std::string path : {"dir", "dir/", ""}) {
      CAPTURE(path);
      auto r = cli.stat(path);
      REQUIRE(r);
      CHECK(r->type == entry_type::dir);
      CHECK(r->size == 0);
      CHECK_FALSE(r->digest_ready);
      if (path != "") {
        CHECK(r->version.ino == static_cast<std::uint64_t>(st.st_ino));
        CHECK(r->mtime_ns == ns_of(st.st_mtim));
      }
    }
  }
  SUBCASE("what is not there") {
    CHECK(cli.stat("missing").error() == errc::not_found);
    CHECK(cli.stat("dir/missing").error() == errc::not_found);
    CHECK(cli.stat("data.bin/x").error() == errc::not_directory);
    CHECK(cli.stat(std::string(proto::max_name + 1, 'n')).error() == errc::bad_path);
  }
}

TEST_SUITE_END();
