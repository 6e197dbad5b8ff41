// Symlinks that stay inside the served root are followed by GET, STAT and LIST.

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/protocol.hpp"
#include "support/file_facts.hpp"
#include "support/running_server.hpp"

namespace {

using ferry::protocol::entry_type;
using ferry::protocol::errc;
using namespace ferry::test;

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("symlinks that stay inside the root are followed") {
  temp_dir root;
  root.write("file.txt", "inside content");
  root.mkdir("sub");
  root.write("sub/inner.txt", "inner");
  root.symlink("file.txt", "link");
  root.symlink("../file.txt", "sub/up_link");
  root.symlink("sub", "sub_link");
  running_server srv{root.path()};
  blocking_client cli{srv.endpoint()};
  if (!have_openat2()) {
    // The fallback refuses every symlink: nothing more to check here.
    CHECK(cli.get("link", 0, 4096).error() == errc::outside_root);
    return;
  }
  for (const std::string path : {"link", "sub/up_link", "sub_link/up_link"}) {
    CAPTURE(path);
    auto b = cli.get(path, 0, 4096);
    REQUIRE(b);
    CHECK(b->data == "inside content");
    CHECK(b->meta.version == version_of(root / "file.txt"));
    auto st = cli.stat(path);
    REQUIRE(st);
    CHECK(st->type == entry_type::file);
    CHECK(st->size == 14);
  }
  auto inner = cli.get("sub_link/inner.txt", 0, 4096);
  REQUIRE(inner);
  CHECK(inner->data == "inner");
  auto page = cli.list("sub_link");
  REQUIRE(page);
  REQUIRE(page->entries.size() == 2);
  CHECK(page->entries[0].name == "inner.txt");
  CHECK(page->entries[1].name == "up_link");
  CHECK(page->entries[1].type == entry_type::symlink);
}

TEST_SUITE_END();
