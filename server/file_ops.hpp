#pragma once

// Blocking file-system work for the server. Everything here runs on libuv's thread pool (or,
// for reads that must not block, with RWF_NOWAIT on the loop) and never touches uv handles.

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/protocol.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"
#include "server/dir_cache.hpp"

namespace ferry::server {

[[nodiscard]] protocol::file_version version_of(const struct stat& st) noexcept;
[[nodiscard]] protocol::entry_type type_of(mode_t mode) noexcept;
[[nodiscard]] std::int64_t mtime_ns_of(const struct stat& st) noexcept;

// What a STAT of a path finds. `fd` is a readable descriptor of a regular file (for digests).
struct stat_info {
  protocol::entry_type type = protocol::entry_type::other;
  protocol::file_version version;
  std::int64_t mtime_ns = 0;
  std::uint16_t mode = 0;  // permission bits, st_mode & 07777
  unique_fd fd;
};

// Resolves `rel` beneath the root (following symlinks that stay inside it) and stats it.
[[nodiscard]] result<stat_info> stat_beneath(int root_fd, const std::string& rel) noexcept;

// The outcome of reading one block.
struct read_outcome {
  protocol::errc error = protocol::errc::ok;
  bool would_block = false;  // RWF_NOWAIT: the data is not in the page cache
  protocol::file_version version;
  std::uint32_t length = 0;
  bool eof = false;
};

// The STAT reply for what stat_beneath() found, without the file's digest.
[[nodiscard]] inline protocol::stat_reply stat_reply_of(const stat_info& info,
                                                        std::uint32_t max_block) noexcept {
  protocol::stat_reply r;
  r.type = info.type;
  r.size = info.type == protocol::entry_type::file ? info.version.size : 0;
  r.mtime_ns = info.mtime_ns;
  r.mode = info.mode;
  r.version = info.version;
  r.max_block = max_block;
  return r;
}

// The fields of the data reply that carries a block read as `r` from `offset`.
[[nodiscard]] inline protocol::data_reply data_reply_of(std::uint64_t offset,
                                                        const read_outcome& r) noexcept {
  protocol::data_reply meta;
  meta.offset = offset;
  meta.eof = r.eof;
  meta.version = r.version;
  meta.length = r.length;
  return meta;
}

// Reads up to `block` bytes at `offset` from the regular file `fd` into `out`, together with
// the file's version at the time of reading. With `nowait`, returns would_block instead of
// waiting for the disk.
[[nodiscard]] read_outcome read_block(int fd, std::uint64_t offset, std::uint32_t block,
                                      std::byte* out, bool nowait) noexcept;

// Reads consecutive blocks of `block` bytes from `offset` on, block i into slots[i], with one
// fstat and one preadv2, and fills out[i] for each block read whole. Returns how many were; the
// caller reads the rest, if any, with read_block, which reports what stopped this one.
[[nodiscard]] std::size_t read_blocks(int fd, std::uint64_t offset, std::uint32_t block,
                                      std::span<std::byte* const> slots,
                                      std::span<read_outcome> out, bool nowait) noexcept;

// A read-only shared mapping of part of a regular file. Its pages are the page cache's own, so
// a block can be hashed and sent from it with no copy in between. Touching a page past the
// file's current end raises SIGBUS: read it in read_mapped().
class file_mapping {
 public:
  // Maps [offset, offset + length) of `fd`, or nothing (null) for an empty range or when the
  // kernel refuses. With `populate`, the page tables are filled at once instead of a fault per
  // page; only for a range in the page cache, or the call waits for the disk.
  [[nodiscard]] static std::shared_ptr<const file_mapping> map(int fd, std::uint64_t offset,
                                                               std::uint64_t length,
                                                               bool populate) noexcept;
  ~file_mapping();
  file_mapping(const file_mapping&) = delete;
  file_mapping& operator=(const file_mapping&) = delete;

  // The byte at file offset `offset`, which must lie in the mapped range.
  [[nodiscard]] const std::byte* at(std::uint64_t offset) const noexcept {
    return base_ + (offset - base_offset_);
  }
  [[nodiscard]] std::uint64_t begin() const noexcept { return offset_; }
  [[nodiscard]] std::uint64_t end() const noexcept { return offset_ + length_; }
  // True if every page of [offset, offset + length) is in the page cache, so that reading it
  // cannot wait for a disk. The range must lie within the mapping and span at most 4 MiB.
  // It asks the kernel (mincore) without touching the pages.
  [[nodiscard]] bool resident(std::uint64_t offset, std::uint64_t length) const noexcept;

 private:
  file_mapping(const std::byte* base, std::uint64_t base_offset, std::size_t mapped,
               std::uint64_t offset, std::uint64_t length) noexcept
      : base_{base}, base_offset_{base_offset}, mapped_{mapped}, offset_{offset}, length_{length} {}
  const std::byte* base_;          // the first mapped page
  std::uint64_t base_offset_;      // its file offset, page-aligned
  std::size_t mapped_;             // bytes mapped from base_
  std::uint64_t offset_, length_;  // the range asked for
};

// Runs fn(ctx), which reads file mappings, and returns true; or returns false as soon as it
// touches a page past the end of a file that shrank, instead of dying of SIGBUS. `fn` must own
// nothing that needs its destructor run: it is left by siglongjmp.
[[nodiscard]] bool read_mapped(void (*fn)(void*), void* ctx) noexcept;

// True if `fd` lies on a file system held in memory (tmpfs, ramfs), where a read never waits for
// a disk. Such file systems refuse RWF_NOWAIT, so without this every read would go to the pool.
[[nodiscard]] bool reads_from_memory(int fd) noexcept;

}  // namespace ferry::server
