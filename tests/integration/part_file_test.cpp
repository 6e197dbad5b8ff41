// Unit tests for the partial output file: blocks stored in any order reach OUT.part at their
// offsets when written, the digest covers them in file order, and a failed write leaves the
// blocks it did not write undone, in memory and in the state file.

#include "client/part_file.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "client/errors.hpp"
#include "common/digest.hpp"
#include "support/running_server.hpp"

namespace {

namespace fs = std::filesystem;
namespace proto = ferry::protocol;
using ferry::client::part_file;
using ferry::test::temp_dir;
using bytes = std::vector<std::byte>;

bytes pattern(std::size_t n, unsigned seed) {
  bytes b(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& c : b) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<std::byte>(x >> 24);
  }
  return b;
}

bytes read_all(const fs::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::vector<char> c{std::istreambuf_iterator<char>{in}, {}};
  bytes b(c.size());
  std::transform(c.begin(), c.end(), b.begin(), [](char ch) { return static_cast<std::byte>(ch); });
  return b;
}

proto::digest128 digest_of(const bytes& b) {
  ferry::digest_state d;
  d.update(b);
  return d.finish();
}

proto::file_version version_of_size(std::uint64_t size) {
  return proto::file_version{1, 2, size, 3, 4};
}

std::span<const std::byte> block_of(const bytes& content, std::uint64_t index,
                                    std::uint32_t block) {
  const auto at = index * block;
  return {content.data() + at, std::min<std::size_t>(block, content.size() - at)};
}

}  // namespace

TEST_CASE("stored blocks reach OUT.part in runs, in any order, and the digest is in file order") {
  temp_dir dir;
  const std::uint32_t block = 1000;
  const auto content = pattern(37 * block + 123, 7);  // a short last block
  const auto out = dir.path() / "out.bin";
  part_file part{out, version_of_size(content.size()), block};
  REQUIRE(part.block_count() == 38);

  // Batches as replies might come: in order, then a run with a gap, the gap, then out of order.
  const std::vector<std::vector<std::uint64_t>> batches = {
      {0, 1, 2, 3}, {5, 6, 7, 9, 10}, {4, 8}, {37, 20, 21, 22, 11, 12}, {}, {}};
  std::vector<std::uint64_t> rest(38);
  std::iota(rest.begin(), rest.end(), 0);
  for (const auto& b : batches) {
    for (auto i : b) {
      part.store(i, block_of(content, i, block));
      std::erase(rest, i);
    }
    // Stored means done at once, written or not, so a duplicate in the same batch is skipped.
    for (auto i : b) CHECK(part.is_done(i));
    part.write_pending();
  }
  std::reverse(rest.begin(), rest.end());
  for (auto i : rest) part.store(i, block_of(content, i, block));
  part.store(3, block_of(content, 3, block));  // a duplicate changes nothing
  CHECK(part.done_blocks() == part.block_count());
  CHECK(part.digest() == digest_of(content));
  part.commit();
  CHECK(read_all(out) == content);
}

TEST_CASE("zero blocks are left as holes and still count as done") {
  temp_dir dir;
  const std::uint32_t block = 4096;
  bytes content(8 * block, std::byte{0});
  const auto data = pattern(block, 3);
  std::copy(data.begin(), data.end(), content.begin() + 5 * block);
  const auto out = dir.path() / "sparse.bin";
  part_file part{out, version_of_size(content.size()), block};
  for (std::uint64_t i = 0; i < 8; ++i) part.store(i, block_of(content, i, block));
  CHECK(part.done_blocks() == 8);
  CHECK(part.digest() == digest_of(content));
  part.commit();
  CHECK(read_all(out) == content);
}

TEST_CASE("a failed write leaves the blocks it did not write undone, and says so on disk") {
  temp_dir dir;
  const std::uint32_t block = 4096;
  const auto content = pattern(64 * block, 11);
  const auto out = dir.path() / "big.bin";
  const auto version = version_of_size(content.size());
  {
    part_file part{out, version, block};
    for (std::uint64_t i = 0; i < 8; ++i) part.store(i, block_of(content, i, block));
    part.write_pending();
    part.flush();

    // Files may not grow past block 16: writing there fails with EFBIG, as a full disk would
    // with ENOSPC. The signal that comes with it is ignored, so the call just fails.
    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = 16 * block;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    for (std::uint64_t i = 8; i < 24; ++i) part.store(i, block_of(content, i, block));
    CHECK(part.done_blocks() == 24);
    bool failed = false;
    try {
      part.write_pending();
    } catch (const ferry::client::failure& f) {
      failed = f.code() == ferry::client::exit_code::local_io;
    }
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
    ::signal(SIGXFSZ, old_handler);
    CHECK(failed);
    for (std::uint64_t i = 0; i < 16; ++i) CHECK(part.is_done(i));
    for (std::uint64_t i = 16; i < 24; ++i) CHECK_FALSE(part.is_done(i));
    CHECK(part.done_blocks() == 16);
  }
  // A rerun resumes with exactly the blocks that reached the file.
  part_file again{out, version, block};
  CHECK(again.resumed());
  CHECK(again.done_blocks() == 16);
  for (std::uint64_t i = 16; i < 64; ++i) again.store(i, block_of(content, i, block));
  CHECK(again.digest() == digest_of(content));
  again.commit();
  CHECK(read_all(out) == content);
}
