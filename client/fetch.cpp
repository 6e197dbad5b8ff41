#include "client/fetch.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <optional>

#include "client/errors.hpp"
#include "client/fetch_tuning.hpp"
#include "client/keying.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;
using namespace fetch_tuning;

namespace {

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

// `block`, or a larger block if `size` bytes in blocks of `block` are more than the transfer
// keeps state for: a size a server claims must not decide how much memory and disk we use.
std::uint32_t bounded_block(const std::string& path, std::uint64_t size, std::uint32_t block,
                            std::uint32_t cap) {
  const auto b = part_file::blocks_for(size, block, cap);
  if (b == 0)
    throw failure{exit_code::refused,
                  fmt::format("{}: the server gives its size as {} bytes, which in blocks of at "
                              "most {} bytes (the largest it sends) is more than {} blocks, the "
                              "most one transfer keeps track of",
                              path, size, cap, part_file::max_blocks)};
  if (b != block)
    log::info("{}: {} bytes is more than {} blocks of {} bytes; using {}-byte blocks", path, size,
              part_file::max_blocks, block, b);
  return b;
}

}  // namespace

std::uint32_t smaller_block(std::uint32_t block, int family) noexcept {
  // The largest block every IPv6 path carries (1280 bytes), then the smallest block served.
  const std::uint32_t ip = family == AF_INET6 ? 40 : 20;
  const auto safe = static_cast<std::uint32_t>(1280 - ip - 8 - data_overhead());
  return block > safe ? safe : protocol::min_block_size;
}

std::uint32_t choose_block_size(const connection& conn, std::uint32_t wish,
                                std::uint32_t server_cap) noexcept {
  std::uint32_t block = wish;
  if (block == 0) {
    const int mtu = conn.path_mtu();
    const int ip = conn.server().family() == AF_INET6 ? 40 : 20;
    const long fits = mtu > 0 ? long{mtu} - ip - 8 - static_cast<long>(data_overhead()) : 1200;
    block = static_cast<std::uint32_t>(
        std::clamp<long>(fits, protocol::min_block_size, protocol::max_block_size));
  }
  return std::min(block, server_cap);
}

task<protocol::stat_reply> stat_with_digest(request_engine& engine, connection& conn,
                                            std::string path, clock::duration timeout) {
  // Hashing a large file takes the server a while, but not forever: a digest that never comes
  // (a file that cannot be read whole, say) must not keep us polling.
  auto asking = engine.ask(conn, protocol::stat_request{path}, {timeout, 30 * timeout});
  auto reply = co_await asking;
  if (auto* e = std::get_if<protocol::error_reply>(&reply)) throw_refused(path, *e);
  auto* st = std::get_if<protocol::stat_reply>(&reply);
  if (st == nullptr) throw failure{exit_code::internal, "unexpected reply to STAT"};
  co_return *st;
}

protocol::stat_reply stat_with_digest(connection& conn, const std::string& path,
                                      clock::duration timeout) {
  request_engine engine{conn.loop()};
  return stat_with_digest(engine, conn, path, timeout).run_on(conn.loop());
}

fetcher::fetcher(connection& conn, std::string remote_path, std::filesystem::path out,
                 fetch_options opt)
    : fetcher{std::vector<connection*>{&conn}, std::move(remote_path), std::move(out),
              std::move(opt)} {}

fetcher::fetcher(std::vector<connection*> sources, std::string remote_path,
                 std::filesystem::path out, fetch_options opt)
    : sources_(sources.size()),
      path_{std::move(remote_path)},
      out_{std::move(out)},
      opt_{std::move(opt)} {
  opt_.max_run = std::clamp<std::uint16_t>(opt_.max_run, 1, protocol::max_run_blocks);
  if (sources.empty()) throw failure{exit_code::usage, "no server to fetch from"};
  for (std::size_t i = 0; i < sources.size(); ++i) {
    if (sources[i]->loop() != sources[0]->loop())
      throw failure{exit_code::internal, "the sources of one fetch must share a loop"};
    sources_[i].conn = sources[i];
    sources_[i].result.address = to_string(sources[i]->server());
  }
}

failure fetcher::mismatch(const source& s, const protocol::stat_reply& st,
                          const source& ref) const {
  return failure{
      exit_code::integrity,
      fmt::format("{} serves another version of '{}' ({} bytes, digest {}) than {} ({} bytes, "
                  "digest {})",
                  s.result.address, path_, st.size, to_string(st.digest), ref.result.address,
                  expected_size_, expected_digest_ ? to_string(*expected_digest_) : "?")};
}

namespace {

// One source's answer to the STATs that stat_all() sends.
struct stat_answer {
  enum class kind { none, file, refused } what = kind::none;
  protocol::stat_reply st;
  errc code = errc::ok;
};

// STATs every connection (all on the engine's loop) at once, each until it gives the file's
// digest or refuses; waits for all of them, but once one has answered, for at most `grace`
// longer. A source that stays silent for `timeout` is left `none`.
task<std::vector<stat_answer>> stat_all(request_engine& engine, std::vector<connection*> conns,
                                        std::string path, clock::duration timeout,
                                        clock::duration grace) {
  std::vector<stat_answer> answers(conns.size());
  std::vector<std::uint64_t> keys(conns.size(), 0);
  std::size_t pending = conns.size();
  std::optional<clock::time_point> first_answer;
  gate g{engine};
  // Whatever is still asked when this ends, by return or by destruction, is forgotten.
  const cancel_on_exit forget{engine, keys};
  for (std::size_t i = 0; i < conns.size(); ++i) {
    keys[i] = engine.start(*conns[i], protocol::stat_request{path}, {timeout, 30 * timeout},
                           [&, i](request_engine::outcome o) {
                             --pending;
                             keys[i] = 0;
                             if (auto* r = std::get_if<protocol::reply>(&o)) {
                               if (auto* e = std::get_if<protocol::error_reply>(r))
                                 answers[i] = {stat_answer::kind::refused, {}, e->code};
                               else if (auto* st = std::get_if<protocol::stat_reply>(r))
                                 answers[i] = {stat_answer::kind::file, *st, errc::ok};
                               if (!first_answer) first_answer = clock::now();
                             }
                             g.open();
                           });
  }
  while (pending > 0) {
    auto limit = clock::duration::max();
    if (first_answer) {
      limit = *first_answer + grace - clock::now();
      if (limit <= clock::duration::zero()) break;
    }
    co_await g.wait(limit);
  }
  co_return answers;
}

}  // namespace

task<protocol::stat_reply> fetcher::establish() {
  const bool first_time = !expected_digest_;
  std::vector<connection*> conns;
  for (const auto& s : sources_) conns.push_back(s.conn);
  // Mirrors that have not answered a little after the first are not waited for: they are
  // probed during the transfer, and used once they prove to serve the same file.
  auto asking = stat_all(*engine_, conns, path_, opt_.timeout, std::chrono::milliseconds{300});
  const auto answers = co_await asking;
  const auto is_file = [&](std::size_t i) {
    return answers[i].what == stat_answer::kind::file &&
           answers[i].st.type == protocol::entry_type::file;
  };
  // The primary is the reference when it has the file; otherwise the first source that does,
  // or, if none does, the first that answered, whose refusal is then the outcome.
  std::size_t ref = answers.size(), answered = answers.size();
  for (std::size_t i = 0; i < answers.size(); ++i) {
    if (answers[i].what == stat_answer::kind::none || sources_[i].state == source_state::dropped)
      continue;
    if (answered == answers.size()) answered = i;
    if (ref == answers.size() && is_file(i)) ref = i;
  }
  if (ref == answers.size()) ref = answered;
  if (ref == answers.size()) {
    std::string names;
    for (const auto& s : sources_) names += (names.empty() ? "" : ", ") + s.result.address;
    throw no_answer(names, std::chrono::duration<double>(opt_.timeout).count(),
                    sources_.size() == 1 ? sources_[0].conn->server().port() : 0, false);
  }
  const auto refusal = [&](std::size_t i) {
    const auto& a = answers[i];
    const auto code = a.what == stat_answer::kind::refused ? a.code : errc::not_regular;
    try {
      throw_refused(path_, code);
    } catch (const failure& f) {
      return failure{f.code(), fmt::format("{}: {}", sources_[i].result.address, f.what())};
    }
  };
  if (!is_file(ref)) throw refusal(ref);
  auto reference = answers[ref].st;
  if (!first_time && (reference.size != expected_size_ || reference.digest != *expected_digest_))
    log::warn("{}: the file changed on the servers", path_);
  expected_size_ = reference.size;
  expected_digest_ = reference.digest;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    auto& s = sources_[i];
    if (s.state == source_state::dropped) continue;
    if (answers[i].what == stat_answer::kind::none) {
      log::warn("{} does not answer; going on without it until it does", s.result.address);
      s.state = source_state::silent;
      s.verified = false;
      continue;
    }
    const auto& st = answers[i].st;
    std::optional<failure> problem;
    if (!is_file(i))
      problem = refusal(i);
    else if (st.size != expected_size_ || st.digest != *expected_digest_)
      problem = mismatch(s, st, sources_[ref]);
    if (problem) {
      // A mirror that lacks the file, or has another version of it, is no use for this file;
      // the others can still deliver it.
      log::warn("{}; {}", problem->what(),
                first_time ? "fetching it from the others" : "no longer using it");
      s.state = source_state::dropped;
      continue;
    }
    reference.max_block = std::min(reference.max_block, st.max_block);
    s.version = st.version;
    s.verified = true;
    s.state = source_state::live;
  }
  co_return reference;
}

task<protocol::stat_reply> fetcher::stat_primary() {
  auto asking = engine_->ask(*sources_[0].conn, protocol::stat_request{path_}, {opt_.timeout});
  auto reply = co_await asking;
  if (auto* e = std::get_if<protocol::error_reply>(&reply)) throw_refused(path_, *e);
  auto* got = std::get_if<protocol::stat_reply>(&reply);
  if (got == nullptr) throw failure{exit_code::internal, "unexpected reply to STAT"};
  if (got->type != protocol::entry_type::file) throw_refused(path_, errc::not_regular);
  co_return *got;
}

void fetcher::mark_progress() noexcept {
  last_progress_ = clock::now();
  busy_since_progress_ = false;
  heard_since_progress_ = false;
}

fetch_result fetcher::run() {
  uv_loop_t* loop = sources_[0].conn->loop();
  request_engine engine{loop};
  return fetch(engine).run_on(loop);
}

task<fetch_result> fetcher::fetch(request_engine& engine) {
  engine_ = &engine;
  done_.emplace(engine);
  const auto started = clock::now();
  const bool multi = sources_.size() > 1;
  connection& primary = *sources_[0].conn;
  protocol::stat_reply st;
  if (multi) {
    st = co_await establish();
  } else {
    st = co_await stat_primary();
    sources_[0].version = st.version;
    sources_[0].verified = true;
  }
  auto mode = st.mode;  // as the latest STAT of the version fetched says
  // The clock of --timeout without progress starts once the file is known: a STAT may wait
  // longer, for a digest the server is computing, and has its own bound.
  mark_progress();

  // The part file is keyed by the primary's version when it answered, so a rerun resumes.
  const auto ref =
      std::find_if(sources_.begin(), sources_.end(), [](auto& s) { return s.verified; });
  auto version = ref->version;
  const auto& ref_conn = *ref->conn;
  auto block = bounded_block(
      path_, st.size, choose_block_size(ref_conn, opt_.block_size, st.max_block), st.max_block);
  log::debug("{}: {} bytes; block size {} (path MTU {}, server cap {})", path_, st.size, block,
             ref_conn.path_mtu(), st.max_block);
  std::optional<part_file> holder;
  if (opt_.stream_fd >= 0)
    holder.emplace(part_file::temporary{stream_temp_dir()}, version, block);
  else
    holder.emplace(out_, version, block);
  part_file& part = *holder;
  if (part.resumed())
    log::info("{}: resuming, {} of {} blocks already in {}", path_, part.done_blocks(),
              part.block_count(), part.data_path().string());
  if (part.resumed() && part.block_size() != block)
    log::info("resuming with the block size of the earlier run, {} bytes", part.block_size());
  stats_.resumed_bytes = part.done_bytes();
  bool retried_digest = false;

  for (;;) {
    // A transfer that a server's replies end at once may never see its own tick.
    if (clock::now() - last_progress_ >= opt_.timeout) {
      part.flush();
      throw no_progress();
    }
    const auto o = co_await transfer(part);
    if (o == outcome::complete) {
      part.flush();
      protocol::digest128 local;
      try {
        local = part.digest();
      } catch (const std::exception& e) {
        throw failure{exit_code::local_io, fmt::format("cannot read back '{}': {}",
                                                       part.data_path().string(), e.what())};
      }
      // With several sources, every source was checked against the digest before it was used.
      auto want = expected_digest_;
      if (!multi) {
        auto asking = stat_with_digest(engine, primary, path_, opt_.timeout);
        const auto remote = co_await asking;
        if (remote.version == version) {
          want = remote.digest;
          mode = remote.mode;  // a chmod changes no version
        } else {
          // Changed after our last block but before the check: the data may be mixed.
          stale_.push_back(version);
          version = remote.version;
          sources_[0].version = version;
        }
      }
      if (want && *want == local) {
        stats_.digest = local;
        if (opt_.stream_fd >= 0) stream_out();
        break;
      }
      if (want && !retried_digest) {
        log::warn("{}: digest mismatch, fetching the whole file again", path_);
        retried_digest = true;
        restart_part(part, version, part.block_size(), true);
        mark_progress();  // once: retried_digest
        continue;
      }
      if (want) {
        part.restart(version, part.block_size());  // nothing in it can be trusted
        throw failure{exit_code::integrity,
                      fmt::format("{}: digest mismatch after a full refetch (local {}, server {})",
                                  path_, to_string(local), to_string(*want))};
      }
    } else if (o == outcome::path_too_small) {
      // Small datagrams must still get through, or it is the server that is gone, and the
      // blocks already here are worth keeping for a rerun: this throws then.
      auto asking = engine.ask(*ref->conn, protocol::stat_request{path_}, {opt_.timeout});
      (void)co_await asking;
      const auto smaller =
          bounded_block(path_, part.size(),
                        smaller_block(part.block_size(), ref_conn.server().family()), st.max_block);
      if (smaller >= part.block_size())
        throw failure{exit_code::network,
                      fmt::format("{}: no block of {} bytes arrives, though the server answers: "
                                  "the path drops datagrams that large, and a file this large "
                                  "needs blocks at least that large",
                                  path_, part.block_size())};
      log::warn(
          "{}: no block of {} bytes arrives, though the server answers: the path drops "
          "datagrams that large; going on with {}-byte blocks",
          path_, part.block_size(), smaller);
      block = smaller;
      restart_part(part, version, smaller);
      mark_progress();  // twice at most: smaller_block goes to 1232 bytes, then 512
      continue;
    } else if (multi) {
      // Every source was set aside, or the file changed: look at all of them again.
      const auto old_digest = *expected_digest_;
      const auto old_size = expected_size_;
      for (auto& s : sources_) s.state = source_state::live;
      const auto now = co_await establish();
      // Its STATs may have waited for digests; what follows is bounded (max_block only falls,
      // contradicted errors count to max_contradicted_errors, versions to max_restarts).
      mark_progress();
      if (now.max_block < part.block_size()) {
        block = bounded_block(path_, now.size, std::min(block, now.max_block), now.max_block);
        version = now.version;
        restart_part(part, version, block);
        continue;
      }
      if (now.size == old_size && now.digest == old_digest) {
        if (++errors_confirmed_away_ > max_contradicted_errors) throw_refused(path_, last_error_);
        continue;
      }
      stale_.push_back(version);
      version = now.version;
    } else {
      // A reply named another version, or a smaller block cap: ask what the file is now.
      auto asking = engine.ask(primary, protocol::stat_request{path_}, {opt_.timeout});
      auto now = co_await asking;
      if (auto* e = std::get_if<protocol::error_reply>(&now)) throw_refused(path_, *e);
      auto* cur = std::get_if<protocol::stat_reply>(&now);
      if (o == outcome::error_reply && cur != nullptr && cur->version == version) {
        if (++errors_confirmed_away_ > max_contradicted_errors) throw_refused(path_, last_error_);
        continue;
      }
      if (cur == nullptr || cur->type != protocol::entry_type::file)
        throw_refused(path_, errc::not_regular);
      if (o == outcome::block_cap_changed && cur->max_block < part.block_size()) {
        block = bounded_block(path_, cur->size, std::min(block, cur->max_block), cur->max_block);
        restart_part(part, cur->version, block);
        version = cur->version;
        sources_[0].version = version;
        continue;
      }
      if (cur->version == version) continue;  // a late reply about an old version
      stale_.push_back(version);
      version = cur->version;
      sources_[0].version = version;
    }
    // The file changed on the server: start over on the new version, a bounded number of times.
    if (++stats_.restarts > opt_.max_restarts)
      throw failure{exit_code::integrity,
                    fmt::format("{}: the file changed {} times during the transfer; giving up",
                                path_, stats_.restarts)};
    log::warn("{}: the file changed on the server; starting over", path_);
    restart_part(part, version,
                 bounded_block(path_, version.size, part.block_size(), st.max_block));
    mark_progress();  // max_restarts at most
  }
  stats_.mode = mode;
  if (opt_.stream_fd < 0)
    part.commit(opt_.keep_mtime, opt_.replace,
                opt_.keep_mode ? std::optional{local_mode(mode)} : std::nullopt);
  stats_.size = part.size();
  stats_.block_size = part.block_size();
  stats_.seconds = seconds_since(started);
  for (auto& s : sources_) {
    stats_.corrupt += s.conn->malformed();
    s.result.state = s.state == source_state::live     ? "live"
                     : s.state == source_state::silent ? "silent"
                                                       : "dropped";
    stats_.sources.push_back(s.result);
  }
  co_return stats_;
}

}  // namespace ferry::client
