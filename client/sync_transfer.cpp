// ferry sync's transfers: each queued file judged (quick check, digest) and fetched on a pool
// of threads, and the summary at the end.

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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
  if (s_.progress) {
    for (const auto& t : tasks_) {
      if (decide_file(t.remote, t.local, s_.checksum) == file_action::skip) continue;
      ++progress_files_;
      progress_total_ += t.remote.size;
    }
    if (progress_files_ > 0) bar_ = std::make_unique<progress_bar>("", 0);
  }
  const auto n = std::min<std::size_t>(std::clamp(s_.jobs, 1u, max_jobs), tasks_.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    failover::connections conns;  // for STATs; one set per thread, as each owns its loop
    for (std::size_t i; !stop_ && (i = next++) < tasks_.size();) run_task(tasks_[i], conns);
  };
  {
    std::vector<std::jthread> pool;
    for (std::size_t i = 1; i < n; ++i) pool.emplace_back(worker);
    worker();
  }
  if (bar_) bar_->clear();
  bar_.reset();
}

void syncer::progress(const file_task& t, std::uint64_t done) {
  if (!bar_) return;
  progress_running_[&t] = done;
  const auto now = clock::now();
  if (now - last_draw_ < std::chrono::milliseconds{100}) return;
  last_draw_ = now;
  std::uint64_t sum = progress_done_;
  for (const auto& [task, bytes] : progress_running_) sum += bytes;
  const auto name = fs::path{t.rel}.filename().string();
  const double pct = t.remote.size == 0
                         ? 100.0
                         : 100.0 * static_cast<double>(done) / static_cast<double>(t.remote.size);
  bar_->set_label(fmt::format("[{}/{}] {} {:.0f}% | all", progress_files_done_ + 1, progress_files_,
                              quote_for_terminal(name), pct));
  bar_->update(std::min(sum, progress_total_), progress_total_);
}

void syncer::progress_done(const file_task& t) {
  if (!bar_) return;
  progress_running_.erase(&t);
  ++progress_files_done_;
  progress_done_ += t.remote.size;
}

void syncer::run_task(const file_task& t, failover::connections& conns) noexcept {
  try {
    run_task_or_throw(t, conns);
  } catch (const failure& f) {
    record_error(t.rel, f.code(), f.what());
  } catch (const std::exception& e) {
    record_error(t.rel, exit_code::internal, e.what());
  }
  std::lock_guard lock{mu_};
  if (progress_running_.contains(&t)) progress_done(t);  // failed half-way: off the line
}

void syncer::run_task_or_throw(const file_task& t, failover::connections& conns) {
  const auto remote = remote_of(t.rel);
  const auto local = local_root_ / t.rel;
  // The listing's size and mtime are the file's as its page was built, so they judge it:
  // only a file whose mtime alone differs costs a STAT (and the server a digest) here.
  const auto& now = t.remote;
  const auto action = decide_file(now, t.local, s_.checksum);
  const auto want_mode = local_mode(now.mode);
  const bool perms_differ = t.local.kind == local_kind::file && t.local.mode != want_mode;
  const bool time_differs = now.mtime_ns != t.local.mtime_ns;
  // A file whose contents are the server's: only its mtime and mode may need setting.
  auto same_contents = [&](std::int64_t mtime_ns, bool time_wrong) {
    if (!s_.dry_run && perms_differ) set_mode(local, want_mode);
    if (!s_.dry_run && time_wrong) set_mtime(local, mtime_ns);
    std::lock_guard lock{mu_};
    if (action != file_action::skip) progress_done(t);  // a skip is not in the progress total
    if (!time_wrong && !perms_differ) {
      ++skipped_;
      return;
    }
    ++time_only_;
    item(itemize_file(false, false, false, time_wrong, perms_differ), t.rel,
         time_wrong ? "time" : "perms", now.size, 0);
  };
  if (action == file_action::skip) return same_contents(now.mtime_ns, false);
  const bool size_differs = action != file_action::check_digest;
  if (action == file_action::check_digest) {
    const auto sd = servers_->call(
        conns, [&](connection& conn) { return stat_with_digest(conn, remote, timeout_); });
    if (sd.type != protocol::entry_type::file) throw_refused(remote, protocol::errc::not_regular);
    if (sd.size == t.local.size && sd.digest == local_digest(local))
      return same_contents(sd.mtime_ns, sd.mtime_ns != t.local.mtime_ns);
  }
  const bool is_new = action == file_action::fetch_new;
  if (s_.dry_run) {
    std::lock_guard lock{mu_};
    ++fetched_;
    item(itemize_file(is_new, true, size_differs, time_differs, perms_differ), t.rel,
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
  fo.keep_mode = true;
  if (s_.progress) {
    fo.on_progress = [this, &t](std::uint64_t done, std::uint64_t) {
      std::lock_guard lock{mu_};
      progress(t, done);
    };
  }
  const auto r = fetch_one(servers_->servers(), remote, local, fo);
  // The listed mtime, even if the file changed since its listing: such a change shows in the
  // next listing as another size or mtime, so the next sync looks at the file again.
  set_mtime(local, now.mtime_ns);
  std::lock_guard lock{mu_};
  progress_done(t);
  ++fetched_;
  bytes_fetched_ += r.bytes_fetched;
  for (std::size_t i = 0; i < r.sources.size() && i < bytes_by_source_.size(); ++i)
    bytes_by_source_[i] += r.sources[i].bytes;
  item(itemize_file(is_new, true, size_differs, time_differs, perms_differ), t.rel,
       is_new ? "new" : "changed", r.size, r.bytes_fetched, r.resumed_bytes);
}

void syncer::item(std::string_view code, const std::string& name, const char* action,
                  std::uint64_t size, std::uint64_t bytes, std::uint64_t resumed,
                  const std::string* target) {
  auto shown = [&](const std::string& n) { return o_.terminal ? quote_for_terminal(n) : n; };
  if (!o_.json && !o_.quiet) {
    if (bar_ && o_.terminal) bar_->clear();  // the line goes where the bar was; it comes back
    fmt::print(out_, "{} {}{}{}\n", code, shown(name), target ? " -> " : "",
               target ? shown(*target) : std::string{});
    out_.flush();
  }
  json j{{"name", name}, {"action", action}};
  if (target) j["target"] = *target;
  const std::string_view a{action};
  if (a == "new" || a == "changed" || a == "time" || a == "perms") {
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
           {"excluded", excluded_},
           {"links_made", links_made_},
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
