// Serving changes nothing under the root: names, contents, modes and times are as they were.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "client/connection.hpp"
#include "client/fetch.hpp"
#include "common/protocol.hpp"
#include "support/encode.hpp"
#include "support/running_server.hpp"

namespace {

using namespace ferry::test;

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("serving changes nothing under the root") {
  temp_dir root;
  root.write("a.txt", "alpha");
  root.write("empty", "");
  const auto big = root.write_random("big.bin", 1 << 20, 31);
  root.mkdir("sub");
  root.mkdir("sub/deeper");
  root.write_random("sub/deeper/x.bin", 70'000, 32);
  root.symlink("a.txt", "link");
  root.symlink("/etc/passwd", "escape");
  root.mkfifo("fifo");
  root.make_socket("sock");
  root.populate("many", varied_names(300));
  const auto before = describe_tree(root.path());
  temp_dir dest;

  {
    running_server srv{root.path()};
    blocking_client cli{srv.endpoint()};
    for (const std::string dir : {"", "sub", "sub/deeper", "many", "fifo", "escape", "../"})
      (void)cli.list(dir);
    std::string cursor;
    for (;;) {
      auto page = cli.list("many", cursor);
      REQUIRE(page);
      if (page->end) break;
      cursor = page->entries.back().name;
    }
    for (const std::string path : {"a.txt", "empty", "big.bin", "sub/deeper/x.bin", "link",
                                   "escape", "fifo", "sock", "sub", "missing", "../a.txt"}) {
      (void)cli.stat(path);
      for (const std::uint64_t offset : {0u, 1000u, 70'000u, 1u << 20, (1u << 20) + 1})
        (void)cli.get(path, offset, 4096);
    }
    REQUIRE(wait_until([&] {
      auto st = cli.stat("big.bin");
      return st && st->digest_ready;
    }));
    cli.send_raw(as_bytes(random_bytes(100, 1)));
    cli.send_raw({});
    // A whole transfer through the client library, into another directory.
    ferry::client::connection conn{srv.endpoint()};
    ferry::client::fetch_options opt;
    opt.block_size = 4096;
    const auto r = ferry::client::fetcher{conn, "big.bin", dest / "big.bin", opt}.run();
    CHECK(r.size == big.size());
    CHECK(srv.counters().internal_errors.load() == 0);
  }

  const auto after = describe_tree(root.path());
  const auto diff = tree_diff(before, after);
  CHECK_MESSAGE(diff.empty(), diff);
  CHECK(before.size() == 12 + 300);
}

TEST_SUITE_END();
