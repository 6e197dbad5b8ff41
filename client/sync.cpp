#include "client/sync.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <ostream>
#include <system_error>

#include "client/server_address.hpp"
#include "client/syncer.hpp"
#include "client/terminal_text.hpp"
#include "common/path_safety.hpp"

namespace ferry::client {

namespace fs = std::filesystem;

namespace detail {

std::string quoted_name(const std::string& name) {
  return ::isatty(STDERR_FILENO) == 1 ? quote_for_terminal(name) : "'" + name + "'";
}

namespace {

// A bound on the names one sync walks, so that a huge or hostile tree cannot exhaust memory.
constexpr std::size_t max_sync_entries = default_max_entries;

}  // namespace

syncer::syncer(const command_options& o, const sync_options& s, std::ostream& out)
    : o_{o}, s_{s}, out_{out}, local_root_{s.local_dir} {
  timeout_ =
      std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.timeout_s));
}

void syncer::run() {
  auto base = normalize_wire_path(o_.path);
  if (!base)
    throw failure{exit_code::usage,
                  fmt::format("bad remote directory '{}': {}", o_.path, to_string(base.error()))};
  base_ = *base;
  std::vector<std::string> texts{o_.address};
  texts.insert(texts.end(), s_.mirrors.begin(), s_.mirrors.end());
  std::vector<endpoint> servers;
  std::vector<std::string> names;
  for (auto& s : resolve_sources(texts, timeout_)) {
    if (s.standby > 0) continue;  // sync uses the servers of the lowest priority that answer
    servers.push_back(s.address);
    names.push_back(std::move(s.name));
  }
  servers_.emplace(std::move(servers), std::move(names));
  bytes_by_source_.assign(servers_->servers().size(), 0);
  {
    failover::connections conns;
    const auto base_depth =
        base_.empty() ? 0
                      : static_cast<std::size_t>(std::count(base_.begin(), base_.end(), '/')) + 1;
    walk(conns, "", base_depth);
  }
  transfer_all();
  for (const auto& [rel, path] : deletions_) remove_tree(path, rel);
  dir_attrs();
  report();
}

void syncer::prepare_local_root() {
  std::error_code ec;
  const auto st = fs::status(local_root_, ec);  // LOCAL_DIR itself may be a symlink to a dir
  if (fs::is_directory(st)) return;
  if (fs::exists(st))
    throw failure{exit_code::usage,
                  fmt::format("'{}' exists and is not a directory", local_root_.string())};
  if (s_.dry_run) return;
  fs::create_directories(local_root_, ec);
  if (ec)
    throw failure{exit_code::local_io,
                  fmt::format("cannot create '{}': {}", local_root_.string(), ec.message())};
}

void syncer::walk(failover::connections& conns, const std::string& rel, std::size_t depth) {
  if (too_many_) return;  // said once, where the bound was crossed
  std::vector<protocol::list_entry> entries;
  const auto shown = rel.empty() ? std::string{"."} : rel + '/';
  try {
    servers_->call(conns, [&](connection& conn) {
      entries.clear();  // a listing cut short by a silent server starts over on the next
      const bool is_dir = list_dir(conn, remote_of(rel), timeout_, [&](const auto& e) {
        if (entries_seen_ + entries.size() >= max_sync_entries) {
          too_many_ = true;
          throw failure{
              exit_code::refused,
              fmt::format("more than {} names in the tree; sync a part of it", max_sync_entries)};
        }
        entries.push_back(e);
      });
      if (!is_dir) throw_refused(remote_of(rel), protocol::errc::not_directory);
    });
    entries_seen_ += entries.size();
  } catch (const failure& f) {
    // The remote directory itself: nothing to sync, and nothing is created for it here.
    if (rel.empty()) throw;
    record_error(shown, f.code(), f.what());
    return;
  }
  if (rel.empty()) prepare_local_root();
  std::set<std::string> names, files;
  for (const auto& e : entries) {
    if (!protocol::valid_entry_name(e.name)) {
      record_error(join(rel, e.name), exit_code::internal,
                   "the server sent a name that is not one path component; skipped");
      continue;
    }
    names.insert(e.name);
    const auto r = join(rel, e.name);
    if (s_.filter.excluded(r, e.type == protocol::entry_type::dir)) {
      ++excluded_;  // and --delete leaves the local name alone: it is in `names`
      continue;
    }
    const auto local = local_root_ / r;
    const auto found = lstat_or_record(local, r);
    if (!found) continue;
    const auto& l = *found;
    switch (e.type) {
      case protocol::entry_type::symlink:
        sync_link(r, e, l);
        break;
      case protocol::entry_type::other:
        log::warn("skipping special file {} on the server", quoted_name(r));
        specials_.push_back(r);
        break;
      case protocol::entry_type::file: {
        files.insert(e.name);
        if (l.kind != local_kind::missing && l.kind != local_kind::file) {
          record_error(r, exit_code::local_io,
                       fmt::format("'{}' is {} here but a file on the server; left alone",
                                   local.string(), kind_name(l.kind)));
        } else {
          tasks_.push_back({r, e, l});
        }
        break;
      }
      case protocol::entry_type::dir:
        if (l.kind != local_kind::dir && l.kind != local_kind::missing) {
          record_error(r + '/', exit_code::local_io,
                       fmt::format("'{}' is {} here but a directory on the server; left alone",
                                   local.string(), kind_name(l.kind)));
          break;
        }
        if (depth + 1 >= protocol::max_depth) {
          record_error(
              r + '/', exit_code::refused,
              fmt::format("deeper than {} components; not descended into", protocol::max_depth));
          break;
        }
        if (l.kind == local_kind::missing) {
          if (!s_.dry_run) {
            std::error_code ec;
            fs::create_directory(local, ec);
            if (ec) {
              record_error(r + '/', exit_code::local_io,
                           fmt::format("cannot create '{}': {}", local.string(), ec.message()));
              break;
            }
          }
          ++dirs_created_;
          item(itemize_new_dir, r + '/', "mkdir", 0, 0);
        } else {
          make_enterable(local, l);
        }
        dirs_.push_back({r, e, l});
        walk(conns, r, depth + 1);
        break;
    }
  }
  if (s_.remove) plan_deletions(rel, names, files);
}

void syncer::plan_deletions(const std::string& rel, const std::set<std::string>& names,
                            const std::set<std::string>& files) {
  const auto dir = local_root_ / rel;
  if (lstat_local(dir).kind != local_kind::dir && !rel.empty()) return;
  std::error_code ec;
  std::vector<std::string> extra;
  for (fs::directory_iterator it{dir, ec}, end; !ec && it != end; it.increment(ec)) {
    const auto name = it->path().filename().string();
    if (names.contains(name) || kept_on_delete(name, files)) continue;
    // An excluded name is left alone, as rsync does without --delete-excluded.
    std::error_code dir_ec;
    const bool is_dir = it->symlink_status(dir_ec).type() == fs::file_type::directory;
    if (!s_.filter.empty() && s_.filter.excluded(join(rel, name), is_dir)) continue;
    extra.push_back(name);
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    record_error(rel.empty() ? "." : rel + '/', exit_code::local_io,
                 fmt::format("cannot list '{}': {}", dir.string(), ec.message()));
    return;
  }
  std::sort(extra.begin(), extra.end());
  for (const auto& name : extra) deletions_.emplace_back(join(rel, name), dir / name);
}

std::optional<local_entry> syncer::lstat_or_record(const fs::path& path, const std::string& name) {
  try {
    return lstat_local(path);
  } catch (const failure& f) {
    record_error(name, f.code(), f.what());
    return std::nullopt;
  }
}

void syncer::remove_tree(const fs::path& path, const std::string& rel) {
  const auto found = lstat_or_record(path, rel);
  if (!found || found->kind == local_kind::missing) return;
  const auto& l = *found;
  if (l.kind == local_kind::dir) {
    std::error_code ec;
    std::vector<std::string> names;
    for (fs::directory_iterator it{path, ec}, end; !ec && it != end; it.increment(ec))
      names.push_back(it->path().filename().string());
    std::sort(names.begin(), names.end());
    for (const auto& n : names) remove_tree(path / n, rel + '/' + n);
  }
  const auto shown = l.kind == local_kind::dir ? rel + '/' : rel;
  if (!s_.dry_run) {
    std::error_code ec;
    fs::remove(path, ec);
    if (ec) {
      record_error(shown, exit_code::local_io,
                   fmt::format("cannot delete '{}': {}", path.string(), ec.message()));
      return;
    }
  }
  ++deleted_;
  item(itemize_deleting, shown, "delete", 0, 0);
}

}  // namespace detail

void run_sync(const command_options& o, const sync_options& s, std::ostream& out) {
  detail::syncer{o, s, out}.run();
}

}  // namespace ferry::client
