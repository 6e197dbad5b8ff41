#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "server/file_ops.hpp"

namespace ferry::server {

class job_pool;

// A file the server opened recently, kept so that the GETs that follow need no path walk.
struct open_file {
  std::shared_ptr<unique_fd> fd;
  // To ask which pages are in the page cache (never read); null for an empty file.
  std::shared_ptr<const file_mapping> whole;
  std::uint64_t opened_ms = 0;
  bool in_memory = false;  // on tmpfs or ramfs: read inline without RWF_NOWAIT
};

// The files opened last, by path, each reused for a second at most: that bounds how long a
// renamed or replaced file keeps being served from its old inode. Loop thread only.
class file_cache {
 public:
  static constexpr std::size_t max_files = 64;

  // The entry for `rel`, or null; valid until the next call.
  [[nodiscard]] const open_file* find(const std::string& rel, std::uint64_t now);
  // Keeps `fd`, opened for `rel`, making room by forgetting the oldest entry.
  void remember(const std::string& rel, std::shared_ptr<unique_fd> fd, std::uint64_t now);
  void clear() noexcept { files_.clear(); }

 private:
  std::unordered_map<std::string, open_file> files_;
};

// Whole-file digests by file version, computed once each, off the loop. Loop thread only.
class digest_cache {
 public:
  static constexpr std::size_t max_digests = 4096;

  [[nodiscard]] const protocol::digest128* find(const protocol::file_version& v) const;
  [[nodiscard]] bool computing(const protocol::file_version& v) const {
    return computing_.contains(v);
  }
  // Marks `v` as being computed.
  void start(const protocol::file_version& v) { computing_.insert(v); }
  // The digest of the file `info` describes, if known. If not, starts computing it off the loop
  // through `pool` (once per version, if the pool has room and `info` holds the file open,
  // which it then gives up), and returns null: the client asks again until it is ready.
  [[nodiscard]] const protocol::digest128* find_or_start(stat_info& info, job_pool& pool);
  // Ends the computation of `v`, keeping its digest if `ok` (the oldest kept makes room).
  void finish(const protocol::file_version& v, const protocol::digest128& digest, bool ok);

 private:
  struct version_less {
    bool operator()(const protocol::file_version& a, const protocol::file_version& b) const;
  };
  std::map<protocol::file_version, protocol::digest128, version_less> digests_;
  std::vector<protocol::file_version> order_;  // insertion order, for eviction
  std::set<protocol::file_version, version_less> computing_;
};

}  // namespace ferry::server
