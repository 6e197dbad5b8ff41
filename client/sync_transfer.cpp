// ferry sync's transfers: each queued file judged (quick check, digest) and fetched on a pool
// of threads, and the summary at the end.

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include "client/fetch.hpp"
#include "client/syncer.hpp"
#include "client/terminal_text.hpp"

namespace ferry::client::detail {

namespace fs = std::filesystem;

namespace {

constexpr unsigned max_jobs = 64;

// Fetches one remote file into `out` through OUT.part, as `get` does, from every source at once.
fetch_result fetch_one(const std::vector<endpoint>& sources, const std::string& remote,
                       const fs::path& out, const fetch_options& o) {
  connection_group group{sources};
  return fetcher{group.members(), remote, out, o}.run();
}

}  // namespace

void syncer::transfer_all() {
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

void syncer::run_task(const file_task& t, failover::connections& conns) noexcept {
  try {
    run_task_or_throw(t, conns);
  } catch (const failure& f) {
    record_error(t.rel, f.code(), f.what());
  } catch (const std::exception& e) {
    record_error(t.rel, exit_code::internal, e.what());
  }
}

void syncer::run_task_or_throw(const file_task& t, failover::connections& conns) {
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
    item(itemize_file(is_new, true, size_differs, time_differs), t.rel, is_new ? "new" : "changed",
         now.size, 0);
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

void syncer::item(std::string_view code, const std::string& name, const char* action,
                  std::uint64_t size, std::uint64_t bytes, std::uint64_t resumed) {
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

void syncer::record_error(const std::string& name, exit_code code, const std::string& what) {
  std::lock_guard lock{mu_};
  log::error("{}", what);
  errors_.push_back({name, code, what});
  if (code == exit_code::interrupted) stop_ = true;
}

void syncer::report() {
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

}  // namespace ferry::client::detail
