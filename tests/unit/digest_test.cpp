// Unit tests for the whole-file XXH3-128 digest, checked against libxxhash called directly.
// (The data reply checksum belongs to the codec and is tested in codec_test.cpp.)

#include "common/digest.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "common/unique_fd.hpp"
#include "common/xxh3_wide.hpp"

namespace {

namespace proto = ferry::protocol;
using bytes = std::vector<std::byte>;

// A temporary file holding `content`, open for reading, unlinked when the test ends.
class temp_file {
 public:
  explicit temp_file(const bytes& content) {
    char name[] = "/tmp/ferry_digest_test.XXXXXX";
    fd_.reset(::mkstemp(name));
    REQUIRE(fd_);
    path_ = name;
    std::size_t done = 0;
    while (done < content.size()) {
      const ssize_t n = ::write(fd_.get(), content.data() + done, content.size() - done);
      REQUIRE(n > 0);
      done += static_cast<std::size_t>(n);
    }
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() { ::unlink(path_.c_str()); }
  [[nodiscard]] int fd() const { return fd_.get(); }

 private:
  std::string path_;
  ferry::unique_fd fd_;
};

bytes random_bytes(std::size_t n, std::uint32_t seed) {
  bytes b(n);
  std::uint32_t x = seed;
  for (auto& v : b) {
    x = x * 1664525u + 1013904223u;  // LCG: reproducible and fast
    v = std::byte(x >> 24);
  }
  return b;
}

proto::digest128 reference(const bytes& b) {
  const XXH128_hash_t h = XXH3_128bits(b.data(), b.size());
  return {h.high64, h.low64};
}

}  // namespace

TEST_SUITE_BEGIN("digest");

TEST_CASE("digest_file equals XXH3-128 of the file's bytes") {
  SUBCASE("a small file") {
    const bytes content = random_bytes(1000, 2);
    temp_file f{content};
    CHECK(ferry::digest_file(f.fd()) == reference(content));
  }
  SUBCASE("a file spanning several read chunks, read from offset 0 whatever the file position") {
    const bytes content = random_bytes((std::size_t{5} << 19) + 123, 3);  // 2.5 MiB + 123
    temp_file f{content};
    // The write left the file position at the end; digest_file must not depend on it.
    REQUIRE(::lseek(f.fd(), 0, SEEK_CUR) == static_cast<off_t>(content.size()));
    const auto d = ferry::digest_file(f.fd());
    CHECK(d == reference(content));
    CHECK(ferry::digest_file(f.fd()) == d);
  }
  SUBCASE("an empty file") {
    temp_file f{bytes{}};
    const auto d = ferry::digest_file(f.fd());
    CHECK(d == reference(bytes{}));
    const XXH128_hash_t empty = XXH3_128bits(nullptr, 0);
    CHECK(d.high == empty.high64);
    CHECK(d.low == empty.low64);
  }
  SUBCASE("files differing in one byte differ") {
    bytes content = random_bytes(4096, 4);
    temp_file a{content};
    content[2048] ^= std::byte{1};
    temp_file b{content};
    CHECK_FALSE(ferry::digest_file(a.fd()) == ferry::digest_file(b.fd()));
  }
  SUBCASE("an unreadable descriptor throws std::system_error") {
    CHECK_THROWS_AS((void)ferry::digest_file(-1), std::system_error);
  }
}

TEST_CASE("digest_state in pieces equals the one-shot digest") {
  const bytes content = random_bytes(100'000, 5);
  ferry::digest_state s;
  const std::span<const std::byte> all{content};
  s.update(all.first(1));
  s.update(all.subspan(1, 0));
  s.update(all.subspan(1, 65535));
  s.update(all.subspan(65536));
  CHECK(s.finish() == reference(content));
  CHECK(ferry::digest_state{}.finish() == reference(bytes{}));
}

TEST_CASE("the wide XXH3 paths equal libxxhash, whichever vector unit they use") {
  // Sizes around every internal boundary of XXH3 (16, 128, 240 bytes, a stripe of 64, a block
  // of 1024) and block-sized buffers, each at an odd offset so nothing is aligned.
  const bytes content = random_bytes(70'000, 7);
  const std::size_t sizes[] = {0,    1,    3,    16,   17,   128,   129,   240,   241,
                               1023, 1024, 1025, 1390, 4096, 65023, 65024, 69'000};
  for (const std::size_t n : sizes) {
    CAPTURE(n);
    const auto* p = content.data() + 3;
    CHECK(ferry::detail::xxh3_64_seeded(p, n, 0x1234) == XXH3_64bits_withSeed(p, n, 0x1234));
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
      CHECK(ferry::detail::xxh3_64_seeded_avx2(p, n, 99) == XXH3_64bits_withSeed(p, n, 99));
#endif
  }
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) {
    // Streaming in uneven pieces through the AVX2 code.
    XXH3_state_t* state = XXH3_createState();
    REQUIRE(state != nullptr);
    REQUIRE(XXH3_128bits_reset(state) == XXH_OK);
    const std::span<const std::byte> all{content};
    for (std::size_t at = 0, step = 1; at < all.size(); at += step, step = step * 3 + 7)
      ferry::detail::xxh3_128_update_avx2(state, all.data() + at, std::min(step, all.size() - at));
    const XXH128_hash_t h = XXH3_128bits_digest(state);
    XXH3_freeState(state);
    CHECK(proto::digest128{h.high64, h.low64} == reference(content));
  }
#endif
}

TEST_CASE("to_string(digest128)") {
  CHECK(ferry::to_string(proto::digest128{0x0123456789abcdefULL, 0xfedcba9876543210ULL}) ==
        "xxh3-128:0123456789abcdeffedcba9876543210");
  CHECK(ferry::to_string(proto::digest128{0, 1}) == "xxh3-128:00000000000000000000000000000001");
  CHECK(ferry::to_string(proto::digest128{1, 0}) == "xxh3-128:00000000000000010000000000000000");

  const auto text = ferry::to_string(reference(random_bytes(10, 6)));
  REQUIRE(text.size() == 9 + 32);
  CHECK(text.substr(0, 9) == "xxh3-128:");
  CHECK(text.find_first_not_of("0123456789abcdef", 9) == std::string::npos);
}

TEST_SUITE_END();
