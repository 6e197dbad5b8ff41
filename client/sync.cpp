#include "client/sync.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ostream.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <system_error>
#include <thread>
#include <utility>

#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/fetch.hpp"
#include "client/server_address.hpp"
#include "client/terminal_text.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"
#include "common/path_safety.hpp"

namespace ferry::client {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A server's name in a message on stderr: quoted as GNU ls would when that is a terminal,
// so that it cannot drive the terminal; as it is, in quotes, otherwise.
std::string quoted_name(const std::string& name) {
  return ::isatty(STDERR_FILENO) == 1 ? quote_for_terminal(name) : "'" + name + "'";
}

// A bound on the names one sync walks, so that a huge or hostile tree cannot exhaust memory.
constexpr std::size_t max_sync_entries = default_max_entries;
constexpr unsigned max_jobs = 64;

// Fetches one remote file into `out` through OUT.part, as `get` does, from every source at once.
fetch_result fetch_one(const std::vector<endpoint>& sources, const std::string& remote,
                       const fs::path& out, const fetch_options& o) {
  connection_group group{sources};
  return fetcher{group.members(), remote, out, o}.run();
}

local_entry lstat_local(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    throw failure{exit_code::local_io,
                  fmt::format("cannot stat '{}': {}", p.string(), std::strerror(errno))};
  }
  local_entry e;
  e.kind = S_ISREG(st.st_mode)   ? local_kind::file
           : S_ISDIR(st.st_mode) ? local_kind::dir
           : S_ISLNK(st.st_mode) ? local_kind::symlink
                                 : local_kind::other;
  e.size = static_cast<std::uint64_t>(st.st_size);
  e.mtime_ns = std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  return e;
}

std::string_view kind_name(local_kind k) {
  switch (k) {
    case local_kind::missing:
      return "nothing";
    case local_kind::file:
      return "a file";
    case local_kind::dir:
      return "a directory";
    case local_kind::symlink:
      return "a symlink";
    case local_kind::other:
      return "a special file";
  }
  return "?";
}

// Sets the mtime of `p` itself (never of a symlink's target); the atime is left alone.
void set_mtime(const fs::path& p, std::int64_t mtime_ns) {
  std::int64_t sec = mtime_ns / 1'000'000'000, nsec = mtime_ns % 1'000'000'000;
  if (nsec < 0) {
    sec -= 1;
    nsec += 1'000'000'000;
  }
  const timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(sec), static_cast<long>(nsec)}};
  if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    throw failure{exit_code::local_io, fmt::format("cannot set the mtime of '{}': {}", p.string(),
                                                   std::strerror(errno))};
}

protocol::digest128 local_digest(const fs::path& p) {
  unique_fd fd{::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (!fd)
    throw failure{exit_code::local_io,
                  fmt::format("cannot open '{}': {}", p.string(), std::strerror(errno))};
  try {
    return digest_file(fd.get());
  } catch (const std::exception& e) {
    throw failure{exit_code::local_io, fmt::format("cannot read '{}': {}", p.string(), e.what())};
  }
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + '/' + name;
}

// A remote regular file to judge and perhaps fetch, on a pool thread.
struct file_task {
  std::string rel;              // below REMOTE_DIR and LOCAL_DIR, '/'-separated
  protocol::list_entry remote;  // as the listing showed it
  local_entry local;            // as the walk found it
};

// The servers of one sync, in the order given, for LIST and STAT: these go to one server at a
// time, and one that does not answer is passed over for the next, for that request and the ones
// after it, so a sync goes on while one server lives. Shared by all threads.
class failover {
 public:
  failover(std::vector<endpoint> servers, std::vector<std::string> names)
      : servers_{std::move(servers)}, names_{std::move(names)} {}

  // One thread's connections, one per server, made when first needed (each owns its loop).
  using connections = std::vector<std::unique_ptr<connection>>;

  // Calls `fn(connection&)` on the preferred server, then on the others in turn while it fails
  // for want of an answer. Throws what the last one threw.
  template <typename F>
  auto call(connections& conns, F&& fn) -> decltype(fn(std::declval<connection&>())) {
    conns.resize(servers_.size());
    const auto first = preferred_.load();
    for (std::size_t k = 0;; ++k) {
      const auto i = (first + k) % servers_.size();
      try {
        if (!conns[i]) conns[i] = std::make_unique<connection>(servers_[i]);
        return fn(*conns[i]);
      } catch (const failure& f) {
        if (f.code() != exit_code::network || k + 1 >= servers_.size()) throw;
        const auto next = (i + 1) % servers_.size();
        log::warn("{}; asking {}", f.what(), names_[next]);
        auto expected = i;
        preferred_.compare_exchange_strong(expected, next);
      }
    }
  }

  [[nodiscard]] const std::vector<endpoint>& servers() const noexcept { return servers_; }
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }

 private:
  std::vector<endpoint> servers_;
  std::vector<std::string> names_;
  std::atomic<std::size_t> preferred_{0};
};

class syncer {
 public:
  syncer(const command_options& o, const sync_options& s, std::ostream& out)
      : o_{o}, s_{s}, out_{out}, local_root_{s.local_dir} {
    timeout_ =
        std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.timeout_s));
  }

  void run() {
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
    report();
  }

 private:
  std::string remote_of(const std::string& rel) const { return join(base_, rel); }

  void prepare_local_root() {
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

  // Lists the remote directory `rel` and plans every entry in it; recurses into directories.
  void walk(failover::connections& conns, const std::string& rel, std::size_t depth) {
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
      const auto local = local_root_ / r;
      const auto found = lstat_or_record(local, r);
      if (!found) continue;
      const auto& l = *found;
      switch (e.type) {
        case protocol::entry_type::symlink:
          log::warn("skipping symlink {} on the server: links are never followed", quoted_name(r));
          symlinks_.push_back(r);
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
          }
          walk(conns, r, depth + 1);
          break;
      }
    }
    if (s_.remove) plan_deletions(rel, names, files);
  }

  // Queues the local names in `rel` that the server does not have. Only directories listed in
  // full get here, so an incomplete listing never deletes anything.
  void plan_deletions(const std::string& rel, const std::set<std::string>& names,
                      const std::set<std::string>& files) {
    const auto dir = local_root_ / rel;
    if (lstat_local(dir).kind != local_kind::dir && !rel.empty()) return;
    std::error_code ec;
    std::vector<std::string> extra;
    for (fs::directory_iterator it{dir, ec}, end; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (!names.contains(name) && !kept_on_delete(name, files)) extra.push_back(name);
    }
    if (ec && ec != std::errc::no_such_file_or_directory) {
      record_error(rel.empty() ? "." : rel + '/', exit_code::local_io,
                   fmt::format("cannot list '{}': {}", dir.string(), ec.message()));
      return;
    }
    std::sort(extra.begin(), extra.end());
    for (const auto& name : extra) deletions_.emplace_back(join(rel, name), dir / name);
  }

  // What is at `path`; nothing (and an error recorded under `name`) if lstat fails.
  std::optional<local_entry> lstat_or_record(const fs::path& path, const std::string& name) {
    try {
      return lstat_local(path);
    } catch (const failure& f) {
      record_error(name, f.code(), f.what());
      return std::nullopt;
    }
  }

  // Deletes `path` (contents first), never following a symlink: a link is removed itself.
  void remove_tree(const fs::path& path, const std::string& rel) {
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

  void transfer_all() {
    const auto n = std::min<std::size_t>(std::clamp(s_.jobs, 1u, max_jobs), tasks_.size());
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      failover::connections conns;  // for STATs; one set per thread, as each owns its loop
      for (std::size_t i; !stop_ && (i = next++) < tasks_.size();) run_task(tasks_[i], conns);
    };
    std::vector<std::jthread> pool;
    for (std::size_t i = 1; i < n; ++i) pool.emplace_back(worker);
    worker();
  }

  void run_task(const file_task& t, failover::connections& conns) noexcept {
    try {
      run_task_or_throw(t, conns);
    } catch (const failure& f) {
      record_error(t.rel, f.code(), f.what());
    } catch (const std::exception& e) {
      record_error(t.rel, exit_code::internal, e.what());
    }
  }

  void run_task_or_throw(const file_task& t, failover::connections& conns) {
    const auto remote = remote_of(t.rel);
    const auto local = local_root_ / t.rel;
    // The listing's size and mtime are the file's as its page was built, so they judge it:
    // only a file whose mtime alone differs costs a STAT (and the server a digest) here.
    const auto& now = t.remote;
    const auto action = decide_file(now, t.local);
    if (action == file_action::skip) {
      std::lock_guard lock{mu_};
      ++skipped_;
      return;
    }
    const bool size_differs = action != file_action::check_digest;
    if (action == file_action::check_digest) {
      const auto sd = servers_->call(
          conns, [&](connection& conn) { return stat_with_digest(conn, remote, timeout_); });
      if (sd.type != protocol::entry_type::file) throw_refused(remote, protocol::errc::not_regular);
      if (sd.size == t.local.size && sd.digest == local_digest(local)) {
        if (!s_.dry_run) set_mtime(local, sd.mtime_ns);
        std::lock_guard lock{mu_};
        ++time_only_;
        item(itemize_file(false, false, false, true), t.rel, "time", sd.size, 0);
        return;
      }
    }
    const bool is_new = action == file_action::fetch_new;
    const bool time_differs = now.mtime_ns != t.local.mtime_ns;
    if (s_.dry_run) {
      std::lock_guard lock{mu_};
      ++fetched_;
      item(itemize_file(is_new, true, size_differs, time_differs), t.rel,
           is_new ? "new" : "changed", now.size, 0);
      return;
    }
    // The fetcher opens these by name: never write through a link someone left there.
    for (const char* suffix : {".part", ".part.state"}) {
      const auto p = fs::path{local.string() + suffix};
      if (const auto k = lstat_local(p).kind; k != local_kind::missing && k != local_kind::file)
        throw failure{exit_code::local_io,
                      fmt::format("'{}' is {}; left alone", p.string(), kind_name(k))};
    }
    fetch_options fo;
    fo.block_size = s_.block_size;
    fo.timeout = timeout_;
    const auto r = fetch_one(servers_->servers(), remote, local, fo);
    // The listed mtime, even if the file changed since its listing: such a change shows in the
    // next listing as another size or mtime, so the next sync looks at the file again.
    set_mtime(local, now.mtime_ns);
    std::lock_guard lock{mu_};
    ++fetched_;
    bytes_fetched_ += r.bytes_fetched;
    for (std::size_t i = 0; i < r.sources.size() && i < bytes_by_source_.size(); ++i)
      bytes_by_source_[i] += r.sources[i].bytes;
    item(itemize_file(is_new, true, size_differs, time_differs), t.rel, is_new ? "new" : "changed",
         r.size, r.bytes_fetched, r.resumed_bytes);
  }

  // One change: a line now (unless quiet or JSON), an entry in the JSON list later.
  // Callers on pool threads hold mu_.
  void item(std::string_view code, const std::string& name, const char* action, std::uint64_t size,
            std::uint64_t bytes, std::uint64_t resumed = 0) {
    if (!o_.json && !o_.quiet) {
      fmt::print(out_, "{} {}\n", code, o_.terminal ? quote_for_terminal(name) : name);
      out_.flush();
    }
    json j{{"name", name}, {"action", action}};
    if (std::string_view{action} != "mkdir" && std::string_view{action} != "delete") {
      j["size"] = size;
      j["bytes_fetched"] = bytes;
      j["resumed_bytes"] = resumed;
    }
    items_.push_back(std::move(j));
  }

  void record_error(const std::string& name, exit_code code, const std::string& what) {
    std::lock_guard lock{mu_};
    log::error("{}", what);
    errors_.push_back({name, code, what});
    if (code == exit_code::interrupted) stop_ = true;
  }

  void report() {
    if (o_.json) {
      json errs = json::array();
      for (const auto& e : errors_)
        errs.push_back(
            {{"name", e.name}, {"exit_code", static_cast<int>(e.code)}, {"error", e.what}});
      json sources = json::array();
      for (std::size_t i = 0; i < bytes_by_source_.size(); ++i)
        sources.push_back({{"address", servers_->names()[i]}, {"bytes", bytes_by_source_[i]}});
      json j{{"dry_run", s_.dry_run},
             {"files_fetched", fetched_},
             {"files_skipped", skipped_},
             {"files_time_only", time_only_},
             {"deleted", deleted_},
             {"dirs_created", dirs_created_},
             {"bytes_fetched", bytes_fetched_},
             {"sources", sources},
             {"files", items_},
             {"symlinks", symlinks_},
             {"specials", specials_},
             {"errors", errs}};
      out_ << j.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    }
    log::info("{} fetched ({} bytes), {} unchanged, {} mtime only, {} deleted, {} directories made",
              fetched_, bytes_fetched_, skipped_, time_only_, deleted_, dirs_created_);
    if (errors_.empty()) return;
    std::string names;
    for (std::size_t i = 0; i < errors_.size() && i < 10; ++i)
      names += (i ? ", " : "") + errors_[i].name;
    if (errors_.size() > 10) names += ", ...";
    throw failure{errors_.front().code,
                  fmt::format("{} of the tree failed: {}",
                              errors_.size() == 1 ? std::string{"1 name"}
                                                  : fmt::format("{} names", errors_.size()),
                              names)};
  }

  struct error_entry {
    std::string name;
    exit_code code;
    std::string what;
  };

  const command_options& o_;
  const sync_options& s_;
  std::ostream& out_;
  fs::path local_root_;
  clock::duration timeout_{};
  std::string base_;
  std::optional<failover> servers_;
  std::size_t entries_seen_ = 0;
  bool too_many_ = false;
  std::vector<file_task> tasks_;
  std::vector<std::pair<std::string, fs::path>> deletions_;

  std::mutex mu_;  // guards what follows while the pool runs
  std::atomic<bool> stop_{false};
  std::uint64_t fetched_ = 0, skipped_ = 0, time_only_ = 0, deleted_ = 0, dirs_created_ = 0,
                bytes_fetched_ = 0;
  std::vector<std::uint64_t> bytes_by_source_;  // in the order of the servers
  json items_ = json::array();
  std::vector<std::string> symlinks_, specials_;
  std::vector<error_entry> errors_;
};

}  // namespace

file_action decide_file(const protocol::list_entry& remote, const local_entry& local) noexcept {
  switch (local.kind) {
    case local_kind::missing:
      return file_action::fetch_new;
    case local_kind::file:
      if (local.size != remote.size) return file_action::fetch_changed;
      return local.mtime_ns == remote.mtime_ns ? file_action::skip : file_action::check_digest;
    default:
      return file_action::conflict;
  }
}

std::string itemize_file(bool is_new, bool fetched, bool size_differs, bool time_differs) {
  if (is_new) return ">f+++++++++";
  std::string s = fetched ? ">f........." : ".f.........";
  if (size_differs) s[3] = 's';
  if (time_differs) s[4] = 't';
  return s;
}

bool kept_on_delete(const std::string& local_name, const std::set<std::string>& remote_files) {
  for (std::string_view suffix : {".part", ".part.state"}) {
    if (local_name.size() > suffix.size() && local_name.ends_with(suffix) &&
        remote_files.contains(local_name.substr(0, local_name.size() - suffix.size())))
      return true;
  }
  return false;
}

void run_sync(const command_options& o, const sync_options& s, std::ostream& out) {
  syncer{o, s, out}.run();
}

}  // namespace ferry::client
