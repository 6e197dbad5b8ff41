// The server's file mappings: blocks read from a mapping are the file's bytes, residency is
// seen, and a read past the end of a file that shrank after it was mapped is caught rather
// than killing the process with SIGBUS.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/unique_fd.hpp"
#include "server/file_ops.hpp"
#include "support/running_server.hpp"

namespace {

using ferry::server::file_mapping;
using ferry::server::read_mapped;
using ferry::test::temp_dir;

struct sum_job {
  const std::byte* from;
  std::size_t length;
  std::uint64_t sum;
};

void sum_bytes(void* p) {
  auto& j = *static_cast<sum_job*>(p);
  for (std::size_t i = 0; i < j.length; ++i) j.sum += std::to_integer<std::uint64_t>(j.from[i]);
}

}  // namespace

TEST_CASE("a mapping holds the file's bytes, and a read past a shrunk end is caught") {
  temp_dir dir;
  constexpr std::size_t size = 64 * 4096;
  const auto content = dir.write_random("f.bin", size, 5);
  ferry::unique_fd fd{::open((dir / "f.bin").c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(fd);
  auto map = file_mapping::map(fd.get(), 0, size, false);
  REQUIRE(map != nullptr);
  CHECK(map->begin() == 0);
  CHECK(map->end() == size);
  CHECK(std::memcmp(map->at(0), content.data(), size) == 0);
  // Just written, so in the page cache; a range past the mapping is never "resident".
  CHECK(map->resident(4096, 8 * 4096));
  CHECK_FALSE(map->resident(size - 4096, 2 * 4096));

  // A window that starts and ends inside pages, as a run of 1390-byte blocks does.
  const std::uint64_t from = 3 * 1390, length = 7 * 1390;
  auto window = file_mapping::map(fd.get(), from, length, true);
  REQUIRE(window != nullptr);
  CHECK(window->begin() == from);
  CHECK(window->end() == from + length);
  CHECK(std::memcmp(window->at(from), content.data() + from, length) == 0);
  CHECK(window->resident(from, length));
  CHECK_FALSE(window->resident(from - 1, 2));

  sum_job whole{map->at(0), size, 0};
  CHECK(read_mapped(sum_bytes, &whole));
  std::uint64_t expected = 0;
  for (const char c : content) expected += static_cast<unsigned char>(c);
  CHECK(whole.sum == expected);

  // The file shrinks to 16 pages while mapped: its first pages still read, a later one raises
  // SIGBUS, which read_mapped turns into false, and the thread carries on.
  REQUIRE(::truncate((dir / "f.bin").c_str(), 16 * 4096) == 0);
  sum_job head{map->at(0), 16 * 4096, 0};
  CHECK(read_mapped(sum_bytes, &head));
  sum_job past{map->at(20 * 4096), 4096, 0};
  CHECK_FALSE(read_mapped(sum_bytes, &past));
  CHECK_FALSE(read_mapped(sum_bytes, &past));  // and again: the handler is still in place
  CHECK(read_mapped(sum_bytes, &head));
}

TEST_CASE("an empty range is not mapped") {
  temp_dir dir;
  dir.write("empty", "");
  ferry::unique_fd fd{::open((dir / "empty").c_str(), O_RDONLY | O_CLOEXEC)};
  REQUIRE(fd);
  CHECK(file_mapping::map(fd.get(), 0, 0, false) == nullptr);
}
