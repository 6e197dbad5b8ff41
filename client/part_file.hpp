#pragma once

// The partial output of a transfer: OUT.part holds the blocks at their offsets, and
// OUT.part.state records the file version, the block size and which blocks are done, so a
// later run resumes without fetching a finished block again.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "common/digest.hpp"
#include "common/protocol.hpp"
#include "common/unique_fd.hpp"

namespace ferry::client {

class part_file {
 public:
  // The most blocks one transfer keeps state for. The client holds about 1.1 bytes per block
  // (a byte of requests in flight and a bit of the state file, which it keeps in memory) and
  // the state file a bit, so a size a server claims costs at most 72 MiB of memory and 8 MiB
  // on disk; a file with more blocks than this is fetched in larger ones (blocks_for).
  static constexpr std::uint64_t max_blocks = std::uint64_t{1} << 26;

  // The block size for a file of `size` bytes: `wish`, or the smallest larger one that keeps it
  // within max_blocks; 0 if that is more than `cap`, the largest the server sends.
  [[nodiscard]] static std::uint32_t blocks_for(std::uint64_t size, std::uint32_t wish,
                                                std::uint32_t cap) noexcept;

  // Opens or creates the partial files for `out`. Resumes when the state file names the same
  // version; otherwise starts from nothing. `block` is used only when starting afresh.
  // Throws failure(local_io) on file-system errors.
  part_file(const std::filesystem::path& out, const protocol::file_version& version,
            std::uint32_t block);
  // A part file without a name or a state file, in the directory `dir`, gone when it is
  // closed: for a transfer to standard output, which cannot be resumed. Never commit()ed.
  struct temporary {
    std::filesystem::path dir;
  };
  part_file(const temporary& where, const protocol::file_version& version, std::uint32_t block);

  [[nodiscard]] std::uint32_t block_size() const noexcept { return block_; }
  [[nodiscard]] std::uint64_t block_count() const noexcept { return blocks_; }
  [[nodiscard]] std::uint64_t size() const noexcept { return version_.size; }
  [[nodiscard]] bool resumed() const noexcept { return resumed_; }
  [[nodiscard]] bool is_done(std::uint64_t index) const noexcept;
  [[nodiscard]] std::uint64_t done_blocks() const noexcept { return done_; }
  [[nodiscard]] std::uint64_t done_bytes() const noexcept;
  [[nodiscard]] std::uint64_t block_length(std::uint64_t index) const noexcept;
  [[nodiscard]] const protocol::file_version& version() const noexcept { return version_; }
  // Bytes from the start of the file that are all done and written: what may be read back in
  // order, and what digest() has already hashed.
  [[nodiscard]] std::uint64_t in_order_bytes() const noexcept;
  // Reads `out.size()` bytes at `offset`, which must lie within in_order_bytes(); throws
  // failure(local_io).
  void read(std::uint64_t offset, std::span<std::byte> out);
  // Gives back the disk space of the bytes before `offset` (within in_order_bytes()), which are
  // hashed already and will not be read again; a temporary part file only.
  void discard_before(std::uint64_t offset);

  // Takes one block and marks it done. Its bytes are written at write_pending(), so they must
  // stay valid until then; blocks that follow each other go out in one system call.
  void store(std::uint64_t index, std::span<const std::byte> data);
  // Writes the blocks stored since the last call. On failure the blocks not written are no
  // longer done, the state file says so, and it throws failure(local_io).
  void write_pending();
  // Writes pending blocks, then the state file if anything changed since the last flush.
  // Throws failure(local_io).
  void flush();
  // Forgets every block (the data is discarded), for a new version of the file.
  void restart(const protocol::file_version& version, std::uint32_t block);
  // XXH3-128 of the whole file. Blocks are hashed as they arrive in order, so only those that
  // came out of order (or were there before this run) are read back.
  [[nodiscard]] protocol::digest128 digest();
  // Gives OUT.part the remote file's mtime (if `keep_mtime`) and the permission bits `mode`
  // (if given, exactly: no umask), renames it to OUT atomically (failing if OUT exists, unless
  // `replace`) and removes the state file.
  void commit(bool keep_mtime = true, bool replace = true,
              std::optional<std::uint16_t> mode = std::nullopt);

  [[nodiscard]] const std::filesystem::path& data_path() const noexcept { return data_path_; }

 private:
  void start_fresh(const protocol::file_version& version, std::uint32_t block);
  bool load_state(const protocol::file_version& version);
  [[nodiscard]] std::byte* bitmap() noexcept;
  [[nodiscard]] const std::byte* bitmap() const noexcept;
  // Hashes done blocks from the cursor on, reading them back from OUT.part.
  void hash_done_blocks();
  void set_done(std::uint64_t index, bool done) noexcept;
  // Writes the state file if anything changed since it was last written.
  void save_state();

  std::filesystem::path out_, data_path_, state_path_;
  unique_fd data_, state_;
  protocol::file_version version_;
  std::uint32_t block_ = 0;
  std::uint64_t blocks_ = 0;
  std::uint64_t done_ = 0;
  bool resumed_ = false;
  bool dirty_ = false;
  struct pending_block {
    std::uint64_t index;
    std::span<const std::byte> data;
  };
  std::vector<pending_block> pending_;  // stored, not yet written; in the order stored
  std::vector<std::byte> image_;        // the state file's bytes: header, bitmap, checksum
  std::unique_ptr<digest_state> hash_;  // over blocks [0, hashed_)
  std::vector<std::byte> read_back_;    // for blocks hashed after they were written
  std::uint64_t hashed_ = 0;
  std::uint64_t discarded_ = 0;  // bytes at the start given back by discard_before()
};

}  // namespace ferry::client
