// ferryd's listing cache keeps a directory once, whatever path reached it: the paths that a
// symbolic link back up the tree makes up (sub/up/sub/up/...) share one snapshot, within a byte
// budget, and a directory that changes is read again.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/protocol.hpp"
#include "server/dir_cache.hpp"
#include "support/running_server.hpp"

namespace {

namespace fs = std::filesystem;
using ferry::server::dir_cache;
using ferry::test::temp_dir;

struct tree {
  temp_dir root;
  int fd = -1;
  tree() {
    fs::create_directories(root / "big");
    for (int i = 0; i < 500; ++i) root.write(fmt::format("big/file-{:04}", i), "x");
    fs::create_directories(root / "sub");
    fs::create_directory_symlink("..", root / "sub" / "up");
    fd = ::open(root.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(fd >= 0);
  }
  ~tree() { ::close(fd); }
  tree(const tree&) = delete;
  tree& operator=(const tree&) = delete;
};

// Every name of the directory `rel`, page by page.
std::size_t count_names(dir_cache& cache, int root_fd, const std::string& rel) {
  std::string cursor;
  std::size_t n = 0;
  for (;;) {
    auto page = cache.list_page(root_fd, rel, cursor, ferry::protocol::max_small_reply);
    REQUIRE(page);
    n += page->entries.size();
    if (page->end) return n;
    REQUIRE_FALSE(page->entries.empty());
    cursor = page->entries.back().name;
  }
}

}  // namespace

TEST_CASE("a directory reached by many paths is cached once") {
  tree t;
  dir_cache cache;
  CHECK(count_names(cache, t.fd, "big") == 500);
  REQUIRE(cache.cached_dirs() == 1);
  const auto bytes = cache.cached_bytes();
  CHECK(bytes > 500 * 9);
  std::string alias = "big";
  for (int depth = 1; depth <= 20; ++depth) {
    alias = "sub/up/" + alias;
    CAPTURE(alias);
    CHECK(count_names(cache, t.fd, alias) == 500);
  }
  CHECK(cache.cached_dirs() == 1);
  CHECK(cache.cached_bytes() == bytes);
}

TEST_CASE("the cache stays within its byte budget and keeps the newest") {
  tree t;
  for (int i = 0; i < 10; ++i) {
    fs::create_directories(t.root / fmt::format("d{}", i));
    for (int j = 0; j < 100; ++j) t.root.write(fmt::format("d{}/name-{:03}", i, j), "y");
  }
  dir_cache one_dir{1};
  CHECK(count_names(one_dir, t.fd, "big") == 500);
  CHECK(count_names(one_dir, t.fd, "d0") == 100);
  CHECK(one_dir.cached_dirs() == 1);

  dir_cache some{16 << 10};
  for (int i = 0; i < 10; ++i) CHECK(count_names(some, t.fd, fmt::format("d{}", i)) == 100);
  INFO("bytes " << some.cached_bytes() << " in " << some.cached_dirs() << " directories");
  CHECK(some.cached_bytes() <= 16u << 10);
  CHECK(some.cached_dirs() < 10);
  CHECK(some.cached_dirs() >= 1);
}

TEST_CASE("a directory that changes is read again, whatever path reached it") {
  tree t;
  dir_cache cache;
  CHECK(count_names(cache, t.fd, "sub/up/big") == 500);
  // Past the settle time, so the snapshot is not provisional and the change must show by key.
  t.root.write("big/new-one", "z");
  CHECK(count_names(cache, t.fd, "big") == 501);
  CHECK(cache.cached_dirs() == 1);
}
