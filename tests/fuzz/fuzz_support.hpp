#pragma once

// Shared by the fuzz targets and the seed-corpus generator: the check that turns a broken
// property into a crash libFuzzer records, the mutator that keeps checksums valid, and the tree
// that fuzz_server serves (make_corpus writes requests for the same names, so the seeds reach
// real files).

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/protocol.hpp"

// libFuzzer's own mutator, for use inside a custom one.
extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

// Aborts with a message when a property does not hold. libFuzzer treats the abort as a crash
// and saves the input; assert() would vanish in a release build.
#define FERRY_FUZZ_CHECK(cond, what)                                                          \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, what, \
                   #cond);                                                                    \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

namespace ferry::fuzz {

// Where a data reply keeps its checksum: after the header, the endianness byte, offset, eof and
// version. The payload's length tag follows, then the payload.
inline constexpr std::size_t data_checksum_at = protocol::header_size + 1 + 8 + 1 + 40;
static_assert(data_checksum_at + 8 + 8 == protocol::data_reply_overhead);

inline void put_le64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i, v >>= 8) p[i] = static_cast<std::uint8_t>(v & 0xff);
}

// Rewrites the checksum of a datagram as PROTOCOL.md defines it (computed here, not through the
// codec): a data block's ahead of its payload, every other message's at its end. Leaves
// datagrams too short to hold one as they are.
inline void reseal(std::uint8_t* data, std::size_t size) {
  if (size < protocol::header_size + 1 + protocol::checksum_size) return;
  if (data[5] == static_cast<std::uint8_t>(protocol::msg_type::data_reply)) {
    if (size < protocol::data_reply_overhead) return;
    const auto seed = XXH3_64bits(data, data_checksum_at);
    const auto payload_at = protocol::data_reply_overhead;
    put_le64(data + data_checksum_at,
             XXH3_64bits_withSeed(data + payload_at, size - payload_at, seed));
  } else {
    const auto n = size - protocol::checksum_size;
    put_le64(data + n, XXH3_64bits(data, n));
  }
}

// A custom mutator for both targets: libFuzzer's mutation, then, for three mutants in four, a
// valid checksum. Without it nearly every mutant is dropped as damaged before any other byte is
// looked at; the fourth keeps the checksum check itself under test.
inline std::size_t mutate_and_reseal(std::uint8_t* data, std::size_t size, std::size_t max_size,
                                     unsigned seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if (seed % 4 != 0) reseal(data, size);
  return size;
}

// The served tree, relative to its root. fuzz_server creates it once at startup.
inline constexpr std::string_view hello_file = "hello.txt";
inline constexpr std::string_view hello_text = "hello, ferry\n";
inline constexpr std::string_view empty_file = "empty";
inline constexpr std::string_view block_file = "block.bin";  // a few blocks of 512 bytes
inline constexpr std::size_t block_file_size = 3000;
inline constexpr std::string_view sub_dir = "sub";
inline constexpr std::string_view inner_file = "sub/inner.txt";
inline constexpr std::string_view inner_link = "link";     // -> sub/inner.txt, stays inside
inline constexpr std::string_view up_link = "sub/up";      // -> ../hello.txt, stays inside
inline constexpr std::string_view escape_link = "escape";  // -> ../outside.txt, leaves the root
inline constexpr std::string_view absolute_link = "abs";   // -> /ABSOLUTE/outside.txt
inline constexpr std::string_view loop_link = "loop";      // -> loop
inline constexpr std::string_view fifo = "fifo";

// Every name in the tree, for seeds and for the check that nothing in it changes.
inline constexpr std::array<std::string_view, 11> tree_names{
    hello_file, empty_file,  block_file,    sub_dir,   inner_file, inner_link,
    up_link,    escape_link, absolute_link, loop_link, fifo};

// The file next to the root that the escaping symlinks point at. Its text must never appear
// in anything the server sends.
inline constexpr std::string_view outside_file = "outside.txt";
inline constexpr std::string_view outside_secret = "ferry-fuzz: outside the root, never served";

}  // namespace ferry::fuzz
