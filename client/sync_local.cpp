// What ferry sync does to local names besides fetching files: symlinks made as symlinks, and
// the modes and mtimes of directories, set after their contents.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "client/fetch.hpp"
#include "client/syncer.hpp"

namespace ferry::client::detail {

namespace fs = std::filesystem;

namespace {

// What the symlink at `p` points to; empty if it cannot be read.
std::string read_link(const fs::path& p) {
  std::string target(protocol::max_link_target + 1, '\0');
  const auto n = ::readlink(p.c_str(), target.data(), target.size());
  if (n <= 0) return {};
  target.resize(static_cast<std::size_t>(n));
  return target;
}

// Makes `p` a symlink to `target`: a new link under a temporary name, renamed over `p`, so that
// `p` never goes missing and never points anywhere else for a moment.
void make_symlink(const fs::path& p, const std::string& target) {
  const auto tmp = fs::path{p.string() + ".ferry-link"};
  (void)::unlink(tmp.c_str());  // left by a sync that died between the two calls
  if (::symlink(target.c_str(), tmp.c_str()) != 0 || ::rename(tmp.c_str(), p.c_str()) != 0) {
    const int e = errno;
    (void)::unlink(tmp.c_str());
    throw failure{exit_code::local_io,
                  fmt::format("cannot make the symlink '{}': {}", p.string(), std::strerror(e))};
  }
}

}  // namespace

void syncer::sync_link(const std::string& rel, const protocol::list_entry& e,
                       const local_entry& l) {
  if (!s_.links) {
    log::warn("skipping symlink {} on the server: links are never followed (--links makes them)",
              quoted_name(rel));
    symlinks_.push_back(rel);
    return;
  }
  if (e.target.empty()) {
    log::warn("skipping symlink {} on the server: its target is longer than {} bytes",
              quoted_name(rel), protocol::max_link_target);
    symlinks_.push_back(rel);
    return;
  }
  if (!s_.unsafe_links && !link_stays_inside(rel, e.target)) {
    log::warn(
        "skipping symlink {} -> {} on the server: it points outside the sync "
        "(--unsafe-links makes it anyway)",
        quoted_name(rel), quoted_name(e.target));
    symlinks_.push_back(rel);
    return;
  }
  const auto local = local_root_ / rel;
  if (l.kind != local_kind::missing && l.kind != local_kind::symlink) {
    record_error(rel, exit_code::local_io,
                 fmt::format("'{}' is {} here but a symlink on the server; left alone",
                             local.string(), kind_name(l.kind)));
    return;
  }
  const bool is_new = l.kind == local_kind::missing;
  if (!is_new && read_link(local) == e.target) {
    if (l.mtime_ns != e.mtime_ns && !s_.dry_run) set_mtime(local, e.mtime_ns);
    return;
  }
  try {
    if (!s_.dry_run) {
      make_symlink(local, e.target);
      set_mtime(local, e.mtime_ns);  // the link's own (utimensat with AT_SYMLINK_NOFOLLOW)
    }
  } catch (const failure& f) {
    record_error(rel, f.code(), f.what());
    return;
  }
  ++links_made_;
  item(itemize_link(is_new), rel, "symlink", 0, 0, 0, &e.target);
}

void syncer::make_enterable(const fs::path& local, const local_entry& l) {
  constexpr std::uint16_t owner_rwx = S_IRWXU;
  if (s_.dry_run || (l.mode & owner_rwx) == owner_rwx) return;
  if (::chmod(local.c_str(), static_cast<mode_t>(l.mode | owner_rwx)) != 0)
    log::warn("cannot make '{}' writable for the sync: {}", local.string(), std::strerror(errno));
}

void syncer::dir_attrs() {
  // Deepest first: a directory's mtime changes while names are made in it, and setting a
  // child's mode or mtime changes nothing in its parent.
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    const auto& d = *it;
    const auto local = local_root_ / d.rel;
    const auto want_mode = local_mode(d.remote.mode);
    // What the user sees is judged against the directory as the walk found it; what is done,
    // against it as it is now, after its contents were written.
    const bool existed = d.before.kind == local_kind::dir;
    const bool time_differs = existed && d.before.mtime_ns != d.remote.mtime_ns;
    const bool perms_differ = existed && d.before.mode != want_mode;
    if (!s_.dry_run) {
      try {
        const auto now = lstat_local(local);
        if (now.kind != local_kind::dir) continue;
        if (now.mode != want_mode) set_mode(local, want_mode);
        if (now.mtime_ns != d.remote.mtime_ns) set_mtime(local, d.remote.mtime_ns);
      } catch (const failure& f) {
        record_error(d.rel + '/', f.code(), f.what());
        continue;
      }
    }
    if (time_differs || perms_differ)
      item(itemize_dir(time_differs, perms_differ), d.rel + '/', "attributes", 0, 0);
  }
}

}  // namespace ferry::client::detail
