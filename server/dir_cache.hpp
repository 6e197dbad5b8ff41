#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/protocol.hpp"
#include "common/result.hpp"

namespace ferry::server {

// Fills one page of a listing from a sorted snapshot: names strictly after `cursor`, as many as
// fit in `budget` wire bytes (at least one, so every page makes progress).
[[nodiscard]] protocol::list_reply make_page(const std::vector<protocol::list_entry>& sorted,
                                             std::string_view cursor, std::size_t budget);

// Sorted directory snapshots of names and types, shared by all pool threads.
// A snapshot is reused while the directory's identity and change times are unchanged, so paging
// through a large directory reads it once; each page stats its own entries, because a file's
// size and mtime change without changing its directory. Resuming after a name keeps the cursor
// correct even when the directory changes between pages.
class dir_cache {
 public:
  // Snapshots are kept by what the directory is (device and inode), not by the path that
  // reached it, so that the paths a symbolic link loop makes up (sub/up/sub/up/...) share one;
  // together they hold about `max_bytes` at most (the newest is kept even if it alone is more).
  explicit dir_cache(std::size_t max_bytes = std::size_t{64} << 20) : max_bytes_{max_bytes} {}

  [[nodiscard]] result<protocol::list_reply> list_page(int root_fd, const std::string& rel,
                                                       std::string_view cursor,
                                                       std::size_t budget) noexcept;
  // Directories cached, and the bytes their snapshots hold.
  [[nodiscard]] std::size_t cached_dirs();
  [[nodiscard]] std::size_t cached_bytes();

 private:
  struct snapshot {
    protocol::file_version key;  // the directory's dev, ino, mtime and ctime when read
    std::chrono::steady_clock::time_point built;
    bool provisional = false;  // read soon after a change, so the key may miss a later one
    std::vector<protocol::list_entry> entries;  // names and types only
    std::size_t bytes = 0;                      // what entries hold, roughly
  };
  using snapshot_ptr = std::shared_ptr<const snapshot>;
  using dir_id = std::pair<std::uint64_t, std::uint64_t>;  // device, inode
  struct dir_id_hash {
    std::size_t operator()(const dir_id& d) const noexcept {
      return std::hash<std::uint64_t>{}(d.first * 0x9e3779b97f4a7c15ULL ^ d.second);
    }
  };

  [[nodiscard]] snapshot_ptr find(const protocol::file_version& key, bool allow_provisional);
  void insert(snapshot_ptr s);
  // One reading of a directory at a time: a second request for it while it is being read is
  // answered busy, so retransmissions cannot multiply the work and the memory of a big one.
  [[nodiscard]] bool begin_reading(const dir_id& d);
  void end_reading(const dir_id& d) noexcept;
  std::set<dir_id> reading_;

  std::mutex mutex_;
  std::list<dir_id> lru_;  // most recently used first
  struct slot {
    snapshot_ptr snap;
    std::list<dir_id>::iterator pos;
  };
  std::unordered_map<dir_id, slot, dir_id_hash> map_;
  std::size_t total_bytes_ = 0;
  std::size_t max_bytes_;
};

}  // namespace ferry::server
