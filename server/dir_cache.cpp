#include "server/dir_cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/codec.hpp"
#include "common/path_safety.hpp"
#include "server/file_ops.hpp"

namespace ferry::server {

using protocol::errc;

protocol::list_reply make_page(const std::vector<protocol::list_entry>& sorted,
                               std::string_view cursor, std::size_t budget) {
  protocol::list_reply page;
  auto it = sorted.begin();
  if (!cursor.empty()) {
    it = std::upper_bound(
        sorted.begin(), sorted.end(), cursor,
        [](std::string_view c, const protocol::list_entry& e) { return c < e.name; });
  }
  std::size_t used = codec::list_reply_base_size;
  for (; it != sorted.end() && page.entries.size() < protocol::max_list_entries; ++it) {
    const auto cost = codec::list_entry_wire_size(it->name.size());
    if (!page.entries.empty() && used + cost > budget) break;
    used += cost;
    page.entries.push_back(*it);
  }
  page.end = it == sorted.end();
  return page;
}

namespace {

// Snapshots read within this long of the directory's last change might have missed a change
// made in the same timestamp tick, so they are trusted only briefly.
constexpr auto settle_time = std::chrono::seconds{1};
constexpr auto provisional_lifetime = std::chrono::seconds{5};

protocol::entry_type type_of_dirent(unsigned char d_type) noexcept {
  switch (d_type) {
    case DT_REG:
      return protocol::entry_type::file;
    case DT_DIR:
      return protocol::entry_type::dir;
    case DT_LNK:
      return protocol::entry_type::symlink;
    default:
      return protocol::entry_type::other;
  }
}

// Reads the names and types of a directory, sorted by name.
result<std::vector<protocol::list_entry>> read_directory(int dir_fd) noexcept {
  try {
    // fdopendir takes ownership of its descriptor, so give it a copy.
    int own = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0) return errc_from_errno(errno);
    DIR* dir = ::fdopendir(own);
    if (dir == nullptr) {
      const int e = errno;
      ::close(own);
      return errc_from_errno(e);
    }
    std::vector<protocol::list_entry> entries;
    for (;;) {
      // readdir reports an error only through errno, so clear it before every call: an entry
      // skipped below must not leave its ENOENT behind to be read as the end's error.
      errno = 0;
      const dirent* d = ::readdir(dir);
      if (d == nullptr) break;
      const std::string_view name{d->d_name};
      if (name == "." || name == "..") continue;
      protocol::list_entry e;
      e.name = std::string{name};
      // Only the name and type are kept: sizes and mtimes change without changing the
      // directory, so they are read when a page is built.
      e.type = type_of_dirent(d->d_type);
      if (d->d_type == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
          e.type = type_of(st.st_mode);
        } else if (errno == ENOENT) {
          continue;  // removed while we read
        }
      }
      entries.push_back(std::move(e));
    }
    const int e = errno;
    ::closedir(dir);
    if (e != 0) return errc_from_errno(e);
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    return entries;
  } catch (...) {
    return errc::busy;  // out of memory
  }
}

// The target of the symlink `name` in `dir_fd`, if it is at most max_link_target bytes long;
// empty if it is longer or cannot be read.
std::string link_target(int dir_fd, const char* name) noexcept {
  try {
    std::string target(protocol::max_link_target + 1, '\0');
    const auto n = ::readlinkat(dir_fd, name, target.data(), target.size());
    if (n <= 0 || static_cast<std::size_t>(n) > protocol::max_link_target) return {};
    target.resize(static_cast<std::size_t>(n));
    return target;
  } catch (...) {
    return {};
  }
}

// Fills in the type, size, mtime, mode and (for a symlink) target of `e` as they are now; false
// if it no longer exists.
bool stat_entry(int dir_fd, protocol::list_entry& e) noexcept {
  struct stat st {};
  if (::fstatat(dir_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno != ENOENT;
  e.type = type_of(st.st_mode);
  e.size = S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ? static_cast<std::uint64_t>(st.st_size) : 0;
  e.mtime_ns = mtime_ns_of(st);
  e.mode = static_cast<std::uint16_t>(st.st_mode & protocol::max_mode);
  if (S_ISLNK(st.st_mode)) e.target = link_target(dir_fd, e.name.c_str());
  return true;
}

// Drops entries from the end of `page` until, targets included, it fits `budget` (keeping one,
// which always fits): the page was cut by names alone, before the targets were read. What is
// dropped comes in the next page, which starts after the last name kept.
void fit_targets(protocol::list_reply& page, std::size_t budget) {
  std::size_t used = codec::list_reply_base_size, keep = 0;
  for (; keep < page.entries.size(); ++keep) {
    const auto& e = page.entries[keep];
    const auto cost = codec::list_entry_wire_size(e.name.size(), e.target.size());
    if (keep > 0 && used + cost > budget) break;
    used += cost;
  }
  if (keep == page.entries.size()) return;
  page.entries.resize(keep);
  page.end = false;
}

// A page of the snapshot's names after `cursor`, each stated now. Entries removed since the
// snapshot are left out; when a whole page of them is, the next one is built instead, so a
// page is empty only at the end.
protocol::list_reply stat_page(int dir_fd, const std::vector<protocol::list_entry>& names,
                               std::string_view cursor, std::size_t budget) {
  std::string after{cursor};
  for (;;) {
    auto page = make_page(names, after, budget);
    if (page.entries.empty()) return page;
    after = page.entries.back().name;
    std::erase_if(page.entries, [&](protocol::list_entry& e) { return !stat_entry(dir_fd, e); });
    fit_targets(page, budget);
    if (!page.entries.empty() || page.end) return page;
  }
}

}  // namespace

dir_cache::snapshot_ptr dir_cache::find(const protocol::file_version& key, bool allow_provisional) {
  std::lock_guard lock{mutex_};
  auto it = map_.find({key.dev, key.ino});
  if (it == map_.end()) return nullptr;
  const auto& s = *it->second.snap;
  const bool stale =
      s.key != key ||
      (s.provisional &&
       (!allow_provisional || std::chrono::steady_clock::now() - s.built > provisional_lifetime));
  if (stale) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.pos);
  return it->second.snap;
}

void dir_cache::insert(snapshot_ptr s) {
  std::lock_guard lock{mutex_};
  const dir_id id{s->key.dev, s->key.ino};
  if (auto it = map_.find(id); it != map_.end()) {
    total_bytes_ -= it->second.snap->bytes;
    lru_.erase(it->second.pos);
    map_.erase(it);
  }
  total_bytes_ += s->bytes;
  lru_.push_front(id);
  map_.emplace(id, slot{std::move(s), lru_.begin()});
  // Evict least recently used snapshots, but keep the newest even if it alone is over budget.
  while (total_bytes_ > max_bytes_ && lru_.size() > 1) {
    auto victim = map_.find(lru_.back());
    total_bytes_ -= victim->second.snap->bytes;
    map_.erase(victim);
    lru_.pop_back();
  }
}

std::size_t dir_cache::cached_dirs() {
  std::lock_guard lock{mutex_};
  return map_.size();
}

std::size_t dir_cache::cached_bytes() {
  std::lock_guard lock{mutex_};
  return total_bytes_;
}

bool dir_cache::begin_reading(const dir_id& d) {
  std::lock_guard lock{mutex_};
  return reading_.insert(d).second;
}

void dir_cache::end_reading(const dir_id& d) noexcept {
  std::lock_guard lock{mutex_};
  reading_.erase(d);
}

result<protocol::list_reply> dir_cache::list_page(int root_fd, const std::string& rel,
                                                  std::string_view cursor,
                                                  std::size_t budget) noexcept {
  try {
    auto fd = open_beneath(root_fd, rel, O_RDONLY | O_DIRECTORY | O_NONBLOCK);
    if (!fd) return fd.error();
    struct stat st {};
    if (::fstat(fd->get(), &st) != 0) return errc_from_errno(errno);
    auto key = version_of(st);
    key.size = 0;  // a directory's st_size says nothing useful and varies by file system
    // A listing that starts afresh never trusts a provisional snapshot: a change made in the
    // same timestamp tick as its reading would otherwise stay invisible until it expires.
    // Later pages of a listing may reuse it, as entries changed during a listing may or may
    // not appear.
    auto snap = find(key, !cursor.empty());
    if (!snap) {
      const dir_id id{key.dev, key.ino};
      if (!begin_reading(id)) return errc::busy;
      struct reading_guard {
        dir_cache& cache;
        const dir_id& id;
        ~reading_guard() { cache.end_reading(id); }
      } guard{*this, id};
      const auto now = std::chrono::steady_clock::now();
      auto entries = read_directory(fd->get());
      if (!entries) return entries.error();
      auto fresh = std::make_shared<snapshot>();
      fresh->key = key;
      fresh->built = now;
      const auto now_real = std::chrono::system_clock::now().time_since_epoch();
      fresh->provisional = std::chrono::nanoseconds{now_real} -
                               std::chrono::nanoseconds{std::max(key.mtime_ns, key.ctime_ns)} <
                           settle_time;
      fresh->entries = std::move(*entries);
      fresh->bytes = sizeof(snapshot) + fresh->entries.capacity() * sizeof(protocol::list_entry);
      for (const auto& e : fresh->entries) fresh->bytes += e.name.capacity();
      snap = fresh;
      insert(snap);
    }
    return stat_page(fd->get(), snap->entries, cursor, budget);
  } catch (...) {
    return errc::busy;
  }
}

}  // namespace ferry::server
