#include "server/file_cache.hpp"

#include <sys/stat.h>

#include <memory>
#include <tuple>

#include "server/pool_jobs.hpp"

namespace ferry::server {

namespace {
// How long an open descriptor is reused before the path is resolved again.
constexpr std::uint64_t file_reuse_ms = 1000;
}  // namespace

const open_file* file_cache::find(const std::string& rel, std::uint64_t now) {
  auto it = files_.find(rel);
  if (it == files_.end()) return nullptr;
  if (now - it->second.opened_ms > file_reuse_ms) {
    files_.erase(it);
    return nullptr;
  }
  return &it->second;
}

void file_cache::remember(const std::string& rel, std::shared_ptr<unique_fd> fd,
                          std::uint64_t now) {
  if (files_.size() >= max_files && !files_.contains(rel)) {
    auto oldest = files_.begin();
    for (auto it = files_.begin(); it != files_.end(); ++it)
      if (it->second.opened_ms < oldest->second.opened_ms) oldest = it;
    files_.erase(oldest);
  }
  const bool in_memory = reads_from_memory(fd->get());
  struct stat st {};
  // Mapped whole once, never read, only to ask which of its pages are in the page cache.
  auto whole = ::fstat(fd->get(), &st) == 0
                   ? file_mapping::map(fd->get(), 0, version_of(st).size, false)
                   : nullptr;
  files_[rel] = open_file{std::move(fd), std::move(whole), now, in_memory};
}

bool digest_cache::version_less::operator()(const protocol::file_version& a,
                                            const protocol::file_version& b) const {
  return std::tie(a.dev, a.ino, a.size, a.mtime_ns, a.ctime_ns) <
         std::tie(b.dev, b.ino, b.size, b.mtime_ns, b.ctime_ns);
}

const protocol::digest128* digest_cache::find(const protocol::file_version& v) const {
  auto it = digests_.find(v);
  return it == digests_.end() ? nullptr : &it->second;
}

void digest_cache::finish(const protocol::file_version& v, const protocol::digest128& digest,
                          bool ok) {
  computing_.erase(v);
  if (!ok) return;
  if (digests_.emplace(v, digest).second) order_.push_back(v);
  if (order_.size() > max_digests) {
    digests_.erase(order_.front());
    order_.erase(order_.begin());
  }
}

const protocol::digest128* digest_cache::find_or_start(stat_info& info, job_pool& pool) {
  if (const auto* digest = find(info.version); digest != nullptr) return digest;
  if (computing(info.version) || !pool.digest_room() || !info.fd) return nullptr;
  auto job = std::make_unique<digest_job>();
  job->fd = std::move(info.fd);
  job->version = info.version;
  job->counts_as_digest = true;
  start(info.version);
  if (!pool.submit(std::move(job))) finish(info.version, {}, false);
  return nullptr;
}

}  // namespace ferry::server
