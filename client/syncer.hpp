#pragma once

// The inside of ferry sync, shared by its two rooms: sync.cpp walks the remote tree and plans
// (directories, deletions), sync_transfer.cpp fetches the files the walk queued and reports.
// Included by those two files only.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client/commands.hpp"
#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/progress.hpp"
#include "client/sync.hpp"
#include "client/sync_plan.hpp"
#include "common/address.hpp"
#include "common/log.hpp"

namespace ferry::client::detail {

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

// A remote regular file to judge and perhaps fetch, on a pool thread.
struct file_task {
  std::string rel;              // below REMOTE_DIR and LOCAL_DIR, '/'-separated
  protocol::list_entry remote;  // as the listing showed it
  local_entry local;            // as the walk found it
};

// A remote directory below the root whose mode and mtime are set once its contents are written.
struct dir_task {
  std::string rel;
  protocol::list_entry remote;
  local_entry before;  // as the walk found it (missing: made by this sync)
};

// A server's name in a message on stderr: quoted as GNU ls would when that is a terminal,
// so that it cannot drive the terminal; as it is, in quotes, otherwise.
[[nodiscard]] std::string quoted_name(const std::string& name);

// "dir/name", or "name" in the top directory.
[[nodiscard]] inline std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + '/' + name;
}

class syncer {
 public:
  syncer(const command_options& o, const sync_options& s, std::ostream& out);
  void run();

 private:
  using json = nlohmann::json;

  [[nodiscard]] std::string remote_of(const std::string& rel) const { return join(base_, rel); }

  // --- the walk (sync.cpp) ---
  void prepare_local_root();
  // Lists the remote directory `rel` and plans every entry in it; recurses into directories.
  void walk(failover::connections& conns, const std::string& rel, std::size_t depth);
  // Queues the local names in `rel` that the server does not have. Only directories listed in
  // full get here, so an incomplete listing never deletes anything.
  void plan_deletions(const std::string& rel, const std::set<std::string>& names,
                      const std::set<std::string>& files);
  // What is at `path`; nothing (and an error recorded under `name`) if lstat fails.
  std::optional<local_entry> lstat_or_record(const std::filesystem::path& path,
                                             const std::string& name);
  // Deletes `path` (contents first), never following a symlink: a link is removed itself.
  void remove_tree(const std::filesystem::path& path, const std::string& rel);

  // --- local names other than fetched files (sync_local.cpp) ---
  // A symlink on the server: made as one with --links (if its target stays inside, or with
  // --unsafe-links), otherwise reported and skipped.
  void sync_link(const std::string& rel, const protocol::list_entry& e, const local_entry& l);
  // An existing local directory the walk enters gets u+rwx for the while, so that a directory
  // the server has read-only can still be filled; dir_attrs() sets its real mode at the end.
  void make_enterable(const std::filesystem::path& local, const local_entry& l);
  // Sets the mode and mtime of every directory the walk entered, deepest first.
  void dir_attrs();

  // --- the transfers and the report (sync_transfer.cpp) ---
  void transfer_all();
  void run_task(const file_task& t, failover::connections& conns) noexcept;
  void run_task_or_throw(const file_task& t, failover::connections& conns);
  // One change: a line now (unless quiet or JSON), an entry in the JSON list later.
  // Callers on pool threads hold mu_.
  // A symlink's line ends in " -> TARGET"; its JSON entry has "target".
  void item(std::string_view code, const std::string& name, const char* action, std::uint64_t size,
            std::uint64_t bytes, std::uint64_t resumed = 0, const std::string* target = nullptr);
  void record_error(const std::string& name, exit_code code, const std::string& what);
  void report();
  // --- the progress line (sync_transfer.cpp); callers hold mu_ ---
  // `done` bytes of task `t` are in; redraws at most ten times a second.
  void progress(const file_task& t, std::uint64_t done);
  // Task `t` is judged or fetched: its bytes count as done.
  void progress_done(const file_task& t);

  struct error_entry {
    std::string name;
    exit_code code;
    std::string what;
  };

  const command_options& o_;
  const sync_options& s_;
  std::ostream& out_;
  std::filesystem::path local_root_;
  clock::duration timeout_{};
  std::string base_;
  std::optional<failover> servers_;
  std::size_t entries_seen_ = 0;
  bool too_many_ = false;
  std::vector<file_task> tasks_;
  std::vector<dir_task> dirs_;  // in the order walked: parents before children
  std::vector<std::pair<std::string, std::filesystem::path>> deletions_;

  std::mutex mu_;  // guards what follows while the pool runs
  std::atomic<bool> stop_{false};
  std::uint64_t fetched_ = 0, skipped_ = 0, time_only_ = 0, deleted_ = 0, dirs_created_ = 0,
                bytes_fetched_ = 0, excluded_ = 0, links_made_ = 0;
  std::vector<std::uint64_t> bytes_by_source_;  // in the order of the servers
  json items_ = json::array();
  std::vector<std::string> symlinks_, specials_;
  std::vector<error_entry> errors_;
  // The progress line: files and bytes the transfers may fetch, and what is in of them.
  std::unique_ptr<progress_bar> bar_;
  std::uint64_t progress_files_ = 0, progress_files_done_ = 0;
  std::uint64_t progress_total_ = 0, progress_done_ = 0;
  std::map<const file_task*, std::uint64_t> progress_running_;  // bytes in, by running task
  clock::time_point last_draw_{};
};

}  // namespace ferry::client::detail
