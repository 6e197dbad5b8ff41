#include "client/fetch.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <thread>

#include "client/errors.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;

namespace {
constexpr std::size_t max_remembered_losses = 4096;
// Retransmission timeouts, and time, with no block received at all, after which the block size
// is taken to be too large for the path.
constexpr int blackhole_timeouts = 3;
constexpr auto blackhole_after = std::chrono::seconds{2};
// The timer that paces requests and looks for losses by time. Between two ticks a source may
// send a little ahead of its pacing rate: this much, so a tick that comes late is made up.
constexpr auto tick = std::chrono::milliseconds{1};
constexpr auto pacing_quantum = std::chrono::milliseconds{1};
constexpr auto flush_every = std::chrono::milliseconds{500};
constexpr auto progress_every = std::chrono::milliseconds{200};
constexpr auto trace_every = std::chrono::seconds{1};

double ms(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
// With several sources: silence for this long (or four RTTs) sets a source aside, and a
// source set aside is asked whether it is back this often.
constexpr auto silent_after = std::chrono::seconds{1};
constexpr auto probe_every = std::chrono::seconds{1};
// Error replies to GETs that a STAT of the same version then contradicts; past this many the
// server is taken at its word.
constexpr int max_contradicted_errors = 32;

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

}  // namespace

std::uint32_t smaller_block(std::uint32_t block, int family) noexcept {
  // The largest block every IPv6 path carries (1280 bytes), then the smallest block served.
  const std::uint32_t ip = family == AF_INET6 ? 40 : 20;
  const auto safe = static_cast<std::uint32_t>(1280 - ip - 8 - protocol::data_reply_overhead);
  return block > safe ? safe : protocol::min_block_size;
}

std::uint32_t choose_block_size(const connection& conn, std::uint32_t wish,
                                std::uint32_t server_cap) noexcept {
  std::uint32_t block = wish;
  if (block == 0) {
    const int mtu = conn.path_mtu();
    const int ip = conn.server().family() == AF_INET6 ? 40 : 20;
    const long fits = mtu > 0 ? long{mtu} - ip - 8 - long{protocol::data_reply_overhead} : 1200;
    block = static_cast<std::uint32_t>(
        std::clamp<long>(fits, protocol::min_block_size, protocol::max_block_size));
  }
  return std::min(block, server_cap);
}

protocol::stat_reply stat_with_digest(connection& conn, const std::string& path,
                                      clock::duration timeout) {
  auto wait = std::chrono::milliseconds{2};
  // Hashing a large file takes the server a while, but not forever: a digest that never comes
  // (a file that cannot be read whole, say) must not keep us polling.
  const auto give_up = clock::now() + 30 * timeout;
  for (;;) {
    auto reply = conn.call(protocol::stat_request{path}, timeout);
    if (auto* e = std::get_if<protocol::error_reply>(&reply)) throw_refused(path, e->code);
    auto* st = std::get_if<protocol::stat_reply>(&reply);
    if (st == nullptr) throw failure{exit_code::internal, "unexpected reply to STAT"};
    if (st->type != protocol::entry_type::file || st->digest_ready) return *st;
    if (clock::now() > give_up)
      throw failure{exit_code::network,
                    fmt::format("{}: the server did not produce the file's digest", path)};
    // The server is hashing this version; poll gently.
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::milliseconds{100});
  }
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
                  "digest {}); every source must serve the same file, so leave it out or update it",
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

// STATs every connection (all on one loop) at once, each until it gives the file's digest or
// refuses; waits for all of them, but once one has answered, for at most `grace` longer, and
// for at most `timeout` in all. Unanswered sources are left `none`.
std::vector<stat_answer> stat_all(const std::vector<connection*>& conns, const std::string& path,
                                  clock::duration timeout, clock::duration grace) {
  struct pending {
    std::uint64_t first_id = 0, last_id = 0;
    clock::time_point next_send{}, sent{};
    clock::duration poll = std::chrono::milliseconds{2};
    bool done = false;
  };
  std::vector<stat_answer> answers(conns.size());
  std::vector<pending> p(conns.size());
  const auto start = clock::now();
  std::optional<clock::time_point> first_answer;
  uv_loop_t* loop = conns[0]->loop();
  auto finished = [&] {
    const auto now = clock::now();
    if (std::all_of(p.begin(), p.end(), [](auto& x) { return x.done; })) return true;
    if (first_answer && now - *first_answer >= grace) return true;
    return now - start >= timeout;
  };
  for (std::size_t i = 0; i < conns.size(); ++i) {
    p[i].first_id = conns[i]->issued();
    conns[i]->set_handler([&, i](const codec::decoded_reply& r) {
      auto& x = p[i];
      const auto id = r.hdr.request_id;
      if (x.done || id < x.first_id || id >= conns[i]->issued()) return;
      const auto now = clock::now();
      if (id == x.last_id) conns[i]->rtt().sample(now - x.sent);
      if (std::holds_alternative<protocol::token_reply>(r.body)) {
        x.next_send = now;  // ask again at once, with the token
      } else if (auto* e = std::get_if<protocol::error_reply>(&r.body)) {
        if (e->code == errc::busy) {
          x.next_send = now + std::chrono::milliseconds{20};
        } else {
          answers[i] = {stat_answer::kind::refused, {}, e->code};
          x.done = true;
        }
      } else if (auto* st = std::get_if<protocol::stat_reply>(&r.body)) {
        if (st->type == protocol::entry_type::file && !st->digest_ready) {
          // Being hashed there: poll gently.
          x.next_send = now + x.poll;
          x.poll = std::min<clock::duration>(x.poll * 2, std::chrono::milliseconds{100});
        } else {
          answers[i] = {stat_answer::kind::file, *st, errc::ok};
          x.done = true;
        }
      }
      if (x.done && !first_answer) first_answer = now;
      if (finished()) uv_stop(loop);
    });
  }
  uv_owned<uv_timer_t> timer{loop, uv_timer_init};
  struct tick_ctx {
    std::function<void()> fn;
  } ctx{[&] {
    const auto now = clock::now();
    for (std::size_t i = 0; i < conns.size(); ++i) {
      auto& x = p[i];
      if (x.done || now < x.next_send) continue;
      if (x.last_id != 0) conns[i]->rtt().backoff();
      x.last_id = conns[i]->send(protocol::stat_request{path});
      x.sent = now;
      x.next_send = now + conns[i]->rtt().rto();
    }
    if (finished()) uv_stop(loop);
  }};
  timer.get()->data = &ctx;
  ctx.fn();
  uv_timer_start(
      timer.get(), [](uv_timer_t* t) { static_cast<tick_ctx*>(t->data)->fn(); }, 2, 2);
  if (!finished()) uv_run(loop, UV_RUN_DEFAULT);
  uv_timer_stop(timer.get());
  for (auto* c : conns) c->set_handler(nullptr);
  return answers;
}

}  // namespace

protocol::stat_reply fetcher::establish() {
  const bool first_time = !expected_digest_;
  std::vector<connection*> conns;
  for (const auto& s : sources_) conns.push_back(s.conn);
  // Mirrors that have not answered a little after the first are not waited for: they are
  // probed during the transfer, and used once they prove to serve the same file.
  const auto answers = stat_all(conns, path_, opt_.timeout, std::chrono::milliseconds{300});
  // The primary is the reference when it answered; otherwise the first source that did.
  std::size_t ref = answers.size();
  for (std::size_t i = 0; i < answers.size() && ref == answers.size(); ++i)
    if (answers[i].what != stat_answer::kind::none && sources_[i].state != source_state::dropped)
      ref = i;
  if (ref == answers.size()) {
    std::string names;
    for (const auto& s : sources_) names += (names.empty() ? "" : ", ") + s.result.address;
    throw failure{exit_code::network,
                  fmt::format("no answer from {} for {:g} s (is ferryd running there? is the UDP "
                              "port open?)",
                              names, std::chrono::duration<double>(opt_.timeout).count())};
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
  const auto is_file = [&](std::size_t i) {
    return answers[i].what == stat_answer::kind::file &&
           answers[i].st.type == protocol::entry_type::file;
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
    if (problem && first_time) throw *problem;
    if (problem) {
      log::warn("{}; no longer using it", problem->what());
      s.state = source_state::dropped;
      continue;
    }
    reference.max_block = std::min(reference.max_block, st.max_block);
    s.version = st.version;
    s.verified = true;
    s.state = source_state::live;
  }
  return reference;
}

fetch_result fetcher::run() {
  const auto started = clock::now();
  const bool multi = sources_.size() > 1;
  connection& primary = *sources_[0].conn;
  protocol::stat_reply st;
  if (multi) {
    st = establish();
  } else {
    auto reply = primary.call(protocol::stat_request{path_}, opt_.timeout);
    if (auto* e = std::get_if<protocol::error_reply>(&reply)) throw_refused(path_, e->code);
    auto* got = std::get_if<protocol::stat_reply>(&reply);
    if (got == nullptr) throw failure{exit_code::internal, "unexpected reply to STAT"};
    if (got->type != protocol::entry_type::file) throw_refused(path_, errc::not_regular);
    st = *got;
    sources_[0].version = st.version;
    sources_[0].verified = true;
  }

  // The part file is keyed by the primary's version when it answered, so a rerun resumes.
  const auto ref =
      std::find_if(sources_.begin(), sources_.end(), [](auto& s) { return s.verified; });
  auto version = ref->version;
  const auto& ref_conn = *ref->conn;
  auto block = choose_block_size(ref_conn, opt_.block_size, st.max_block);
  log::debug("{}: {} bytes; block size {} (path MTU {}, server cap {})", path_, st.size, block,
             ref_conn.path_mtu(), st.max_block);
  part_file part{out_, version, block};
  if (part.resumed())
    log::info("{}: resuming, {} of {} blocks already in {}", path_, part.done_blocks(),
              part.block_count(), part.data_path().string());
  if (part.resumed() && part.block_size() != block)
    log::info("resuming with the block size of the earlier run, {} bytes", part.block_size());
  stats_.resumed_bytes = part.done_bytes();
  bool retried_digest = false;

  for (;;) {
    const auto o = transfer(part);
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
        const auto remote = stat_with_digest(primary, path_, opt_.timeout);
        if (remote.version == version) {
          want = remote.digest;
        } else {
          // Changed after our last block but before the check: the data may be mixed.
          stale_.push_back(version);
          version = remote.version;
          sources_[0].version = version;
        }
      }
      if (want && *want == local) {
        stats_.digest = local;
        break;
      }
      if (want && !retried_digest) {
        log::warn("{}: digest mismatch, fetching the whole file again", path_);
        retried_digest = true;
        part.restart(version, part.block_size());
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
      (void)ref->conn->call(protocol::stat_request{path_}, opt_.timeout);
      const auto smaller = smaller_block(part.block_size(), ref_conn.server().family());
      log::warn("{}: no block of {} bytes arrives, though the server answers: the path drops "
                "datagrams that large; going on with {}-byte blocks",
                path_, part.block_size(), smaller);
      block = smaller;
      part.restart(version, smaller);
      continue;
    } else if (multi) {
      // Every source was set aside, or the file changed: look at all of them again.
      const auto old_digest = *expected_digest_;
      const auto old_size = expected_size_;
      for (auto& s : sources_) s.state = source_state::live;
      const auto now = establish();
      if (now.max_block < part.block_size()) {
        block = std::min(block, now.max_block);
        version = now.version;
        part.restart(version, block);
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
      auto now = primary.call(protocol::stat_request{path_}, opt_.timeout);
      if (auto* e = std::get_if<protocol::error_reply>(&now)) throw_refused(path_, e->code);
      auto* cur = std::get_if<protocol::stat_reply>(&now);
      if (o == outcome::error_reply && cur != nullptr && cur->version == version) {
        if (++errors_confirmed_away_ > max_contradicted_errors) throw_refused(path_, last_error_);
        continue;
      }
      if (cur == nullptr || cur->type != protocol::entry_type::file)
        throw_refused(path_, errc::not_regular);
      if (o == outcome::block_cap_changed && cur->max_block < part.block_size()) {
        block = std::min(block, cur->max_block);
        part.restart(cur->version, block);
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
    part.restart(version, part.block_size());
  }
  part.commit();
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
  return stats_;
}

fetcher::outcome fetcher::transfer(part_file& part) {
  part_ = &part;
  in_flight_.assign(part.block_count(), 0);
  retransmit_.clear();
  scan_ = 0;
  outcome_ = part.done_blocks() == part.block_count() ? outcome::complete : outcome::running;
  error_ = nullptr;
  last_progress_ = last_flush_ = clock::now();
  full_block_seen_ = false;
  silent_timeouts_ = 0;
  transfer_started_ = last_progress_;
  for (auto& s : sources_) {
    s.flights.clear();
    s.lost_by_order.clear();
    s.in_flight_bytes = 0;
    s.seq = 0;
    s.first_id = s.conn->issued();
    start_congestion(s);
    s.last_backoff = s.next_tail_probe = clock::time_point{};
    s.pace_tokens = 0;
    s.pace_at = clock::now();
    s.last_heard = s.next_probe = last_progress_;
  }
  if (outcome_ == outcome::complete) return outcome_;

  uv_loop_t* loop = sources_[0].conn->loop();
  uv_owned<uv_timer_t> timer{loop, uv_timer_init};
  timer.get()->data = this;
  uv_timer_start(
      timer.get(), [](uv_timer_t* t) { static_cast<fetcher*>(t->data)->on_tick(); }, tick.count(),
      tick.count());
  // Ctrl-C or a polite kill: record every finished block before leaving, so a rerun fetches
  // none of them again.
  uv_owned<uv_signal_t> sigint{loop, uv_signal_init};
  uv_owned<uv_signal_t> sigterm{loop, uv_signal_init};
  auto on_signal = [](uv_signal_t* h, int signum) {
    auto& self = *static_cast<fetcher*>(h->data);
    self.error_ = std::make_exception_ptr(
        failure{exit_code::interrupted,
                fmt::format("interrupted by signal {}; rerun the same command to resume", signum)});
    self.finish(outcome::failed);
  };
  for (auto* s : {&sigint, &sigterm}) s->get()->data = this;
  uv_signal_start(sigint.get(), on_signal, SIGINT);
  uv_signal_start(sigterm.get(), on_signal, SIGTERM);
  for (auto& s : sources_) {
    s.conn->set_handler([this, &s](const codec::decoded_reply& r) { on_reply(s, r); });
    // Blocks point into the connection's receive buffer until they are written.
    s.conn->set_batch_end([this] { write_blocks(); });
  }
  pump();
  flush_requests();
  if (outcome_ == outcome::running) uv_run(loop, UV_RUN_DEFAULT);
  for (auto& s : sources_) {
    s.conn->set_handler(nullptr);
    s.conn->set_batch_end(nullptr);
  }
  uv_timer_stop(timer.get());
  part.flush();
  if (opt_.on_progress) opt_.on_progress(part.done_bytes(), part.size());
  if (error_) std::rethrow_exception(error_);
  return outcome_;
}

void fetcher::write_blocks() noexcept {
  try {
    part_->write_pending();
  } catch (...) {
    if (!error_) error_ = std::current_exception();
    finish(outcome::failed);
  }
}

void fetcher::flush_requests() noexcept {
  for (auto& s : sources_) s.conn->flush();
}

void fetcher::finish(outcome o) {
  outcome_ = o;
  uv_stop(sources_[0].conn->loop());
}

std::size_t fetcher::usable_sources() const noexcept {
  return static_cast<std::size_t>(std::count_if(
      sources_.begin(), sources_.end(), [](auto& s) { return s.state != source_state::dropped; }));
}

void fetcher::set_aside(source& s, source_state state) {
  // Whatever it still owes goes to the others at once.
  s.flights.for_each([&](std::uint64_t, const flight& f) {
    --in_flight_[f.index];
    if (!part_->is_done(f.index) && in_flight_[f.index] == 0) retransmit_.push_back(f.index);
    return true;
  });
  s.flights.clear();
  s.in_flight_bytes = 0;
  s.lost_by_order.clear();
  s.state = state;
  s.next_probe = clock::now();
}

void fetcher::drop(source& s, outcome why, const std::string& message) {
  if (usable_sources() <= 1) return finish(why);
  log::warn("{}; no longer using it", message);
  set_aside(s, source_state::dropped);
  pump();
}

void fetcher::send_block(source& s, std::uint64_t index, bool retransmit) {
  protocol::get_request req{path_, index * part_->block_size(), part_->block_size()};
  const auto now = clock::now();
  if (s.flights.empty()) s.last_heard = std::max(s.last_heard, now);
  const auto id = s.conn->queue(req);
  const auto bytes = static_cast<std::uint32_t>(part_->block_length(index));
  s.flights.add(id, flight{index, s.cc->on_send(bytes, s.in_flight_bytes, now), s.seq++});
  s.in_flight_bytes += bytes;
  s.pace_tokens -= bytes;
  ++in_flight_[index];
  ++stats_.requests;
  ++s.result.requests;
  if (retransmit) {
    ++stats_.retransmits;
    ++s.result.retransmits;
  }
}

bool fetcher::endgame_pick(const source& s, std::uint64_t& index) const {
  // The oldest request outstanding at another source, for a block no one else was asked for.
  const source* best = nullptr;
  const flight* oldest = nullptr;
  for (const auto& o : sources_) {
    if (&o == &s || o.state != source_state::live) continue;
    o.flights.for_each([&](std::uint64_t, const flight& f) {
      if (part_->is_done(f.index) || in_flight_[f.index] != 1) return true;
      if (oldest == nullptr || f.cc.sent < oldest->cc.sent) {
        best = &o;
        oldest = &f;
      }
      return false;
    });
  }
  if (best == nullptr) return false;
  index = oldest->index;
  return true;
}

bool fetcher::pump_source(source& s) {
  while (!retransmit_.empty()) {
    const auto index = retransmit_.front();
    retransmit_.pop_front();
    if (part_->is_done(index) || in_flight_[index] != 0) continue;
    send_block(s, index, true);
    return true;
  }
  while (scan_ < part_->block_count() && (part_->is_done(scan_) || in_flight_[scan_] != 0)) ++scan_;
  if (scan_ < part_->block_count()) {
    send_block(s, scan_++, false);
    return true;
  }
  // Near the end, ask a second source for what the others still owe, so one slow server
  // cannot hold up the finish.
  std::uint64_t index = 0;
  if (sources_.size() > 1 && endgame_pick(s, index)) {
    send_block(s, index, false);
    return true;
  }
  if (tail_pick(s, index)) {
    send_block(s, index, true);
    return true;
  }
  return false;
}

bool fetcher::no_whole_block_done() const noexcept {
  const auto done = part_->done_blocks();
  if (done == 0) return true;
  // The last block alone may be done, if it is short: it may have crossed where whole ones
  // do not.
  const auto last = part_->block_count() - 1;
  return done == 1 && part_->is_done(last) && part_->block_length(last) < part_->block_size();
}

bool fetcher::tail_pick(source& s, std::uint64_t& index) {
  // At the very end nothing is sent after the last requests, so RACK cannot see their loss and
  // only the timeout would, at two RTTs or more. A request overdue by half an RTT and 10 ms is
  // asked once more instead, as a tail loss probe does (RFC 8985, 7); one such probe goes out
  // each quarter RTT at most. The 10 ms and the spacing keep a busy or slow client (under a
  // sanitizer, say), whose replies come late but come, from asking for blocks twice.
  const auto now = clock::now();
  const auto srtt = s.conn->rtt().srtt();
  if (now < s.next_tail_probe) return false;
  // Without an RTT sample yet (a mirror that just came back), the RTO's first guess.
  const auto overdue = s.conn->rtt().has_sample()
                           ? srtt + std::max(s.loss.window(s.cc->min_rtt(), srtt, s.cc->round()),
                                             srtt / 2) +
                                 std::chrono::milliseconds{10}
                           : s.conn->rtt().rto();
  bool found = false;
  s.flights.for_each([&](std::uint64_t, const flight& f) {
    if (now - f.cc.sent < overdue) return false;
    if (part_->is_done(f.index) || in_flight_[f.index] != 1) return true;
    index = f.index;
    found = true;
    return false;
  });
  if (found) s.next_tail_probe = now + srtt / 4;
  return found;
}

void fetcher::start_congestion(source& s) {
  congestion::config c;
  c.segment = part_->block_size();
  if (opt_.max_window != 0) c.max_cwnd = std::uint64_t{opt_.max_window} * part_->block_size();
  // On a short path the model's window (a few bandwidth-delay products) is smaller than what
  // the server and the client handle in one batch; a floor of what the receive buffer holds,
  // up to 256 KiB, keeps them busy there and is 2 ms at 1 Gbit/s elsewhere.
  c.min_cwnd_floor =
      std::min<std::uint64_t>(s.conn->receive_buffer() / 2, std::uint64_t{256} << 10);
  // The first flight goes out before any rate is known: 32 blocks, but no more than 1 MiB (16
  // blocks of 64 KiB, as the window started before) nor than the socket holds.
  c.initial_cwnd = std::max<std::uint64_t>(
      std::min<std::uint64_t>({32ull * c.segment, std::uint64_t{1} << 20, s.conn->receive_buffer()}),
      4ull * c.segment);
  if (s.conn->rtt().has_sample()) c.initial_rtt = s.conn->rtt().srtt();
  c.seed = s.conn->first_id();
  s.cc.emplace(c, clock::now());
  s.loss.reset();
}

bool fetcher::may_send(source& s, clock::time_point now) noexcept {
  if (s.state != source_state::live || s.in_flight_bytes >= s.cc->cwnd()) return false;
  // Pacing as a token bucket filled at the model's current rate: a request may go while there
  // are tokens, and costs its block. The bucket holds one quantum of the rate (at least two
  // blocks), so a source that was idle catches up by that much and no more; and since it is
  // filled at the rate of the moment, a rate that was low for a while leaves no debt behind.
  const double rate = s.cc->pacing_rate();
  const double burst = std::max(rate * std::chrono::duration<double>(pacing_quantum).count(),
                                2.0 * part_->block_size());
  s.pace_tokens = std::min(
      burst, s.pace_tokens + rate * std::chrono::duration<double>(now - s.pace_at).count());
  s.pace_at = now;
  return s.pace_tokens > 0;
}

void fetcher::pump() {
  // Sources take turns a block at a time, so none gets every new block just by being first;
  // a faster source frees its window sooner and so is asked for more.
  const auto n = sources_.size();
  const auto now = clock::now();
  for (bool sent = true; sent && outcome_ == outcome::running;) {
    sent = false;
    for (std::size_t k = 0; k < n; ++k) {
      auto& s = sources_[(next_source_ + k) % n];
      if (!may_send(s, now)) continue;
      if (pump_source(s)) {
        sent = true;
      } else if (s.in_flight_bytes < s.cc->cwnd()) {
        // Nothing left to ask although the window is open: the end of the file.
        s.cc->on_app_limited(s.in_flight_bytes);
      }
    }
  }
  next_source_ = (next_source_ + 1) % n;
}

void fetcher::declare_lost(source& s, const flight& f) {
  --in_flight_[f.index];
  s.in_flight_bytes -= f.cc.bytes;
  if (!part_->is_done(f.index) && in_flight_[f.index] == 0) retransmit_.push_back(f.index);
  s.cc->on_loss(f.cc, clock::now());
}

std::size_t fetcher::detect_losses(source& s, clock::time_point now) {
  const auto window = s.loss.window(s.cc->min_rtt(), s.conn->rtt().srtt(), s.cc->round());
  std::size_t n = 0;
  std::uint64_t oldest_id = 0;
  while (const auto* oldest = s.flights.oldest(&oldest_id)) {
    if (!s.loss.lost(oldest->seq, oldest->cc.sent, now, window)) break;
    const auto f = *oldest;
    if (s.lost_by_order.size() >= max_remembered_losses) s.lost_by_order.clear();
    s.lost_by_order.emplace(oldest_id, true);
    s.flights.erase(oldest_id);
    declare_lost(s, f);
    ++n;
  }
  return n;
}

void fetcher::on_probe_reply(source& s, const protocol::reply& body) {
  if (std::holds_alternative<protocol::token_reply>(body)) {
    s.next_probe = clock::now();  // ask again at once, with the token
    return;
  }
  if (auto* e = std::get_if<protocol::error_reply>(&body)) {
    if (e->code != errc::busy)
      drop(s, outcome::error_reply,
           fmt::format("{} refuses '{}' now ({})", s.result.address, path_,
                       protocol::to_string(e->code)));
    return;
  }
  auto* st = std::get_if<protocol::stat_reply>(&body);
  if (st == nullptr) return;
  if (!s.verified) {
    if (st->type == protocol::entry_type::file && !st->digest_ready) return;  // probe again
    if (st->type != protocol::entry_type::file || st->size != expected_size_ ||
        st->digest != *expected_digest_) {
      // Its first answer: a mirror that never served this file is refused, as at the start.
      const auto ref =
          std::find_if(sources_.begin(), sources_.end(), [](auto& o) { return o.verified; });
      error_ = std::make_exception_ptr(mismatch(s, *st, *ref));
      return finish(outcome::failed);
    }
    s.version = st->version;
    s.verified = true;
  } else if (st->version != s.version) {
    return drop(s, outcome::version_changed,
                fmt::format("{} now serves another version of '{}'", s.result.address, path_));
  }
  if (st->max_block < part_->block_size())
    return drop(
        s, outcome::block_cap_changed,
        fmt::format("{} now serves blocks of at most {} bytes", s.result.address, st->max_block));
  log::info("{} answers again; using it", s.result.address);
  s.state = source_state::live;
  // What it knew of the path before it fell silent may no longer hold: start afresh.
  start_congestion(s);
  s.last_heard = clock::now();
  pump();
}

void fetcher::on_reply(source& s, const codec::decoded_reply& r) noexcept {
  // It runs inside the connection's read callback: nothing may escape it.
  try {
    handle_reply(s, r);
  } catch (...) {
    if (!error_) error_ = std::current_exception();
    finish(outcome::failed);
  }
}

void fetcher::handle_reply(source& s, const codec::decoded_reply& r) {
  const auto id = r.hdr.request_id;
  if (id < s.first_id || id >= s.conn->issued() || outcome_ != outcome::running) return;
  const auto now = clock::now();
  s.last_heard = now;
  if (s.state == source_state::dropped) return;
  if (s.state == source_state::silent) {
    if (id == s.probe_id) on_probe_reply(s, r.body);
    return;
  }
  std::uint64_t acked_index = 0;
  bool matched = false;
  sent_state acked{};
  if (const auto* f = s.flights.find(id); f != nullptr) {
    s.conn->rtt().sample(now - f->cc.sent);
    s.loss.on_ack(f->seq, now - f->cc.sent);
    acked_index = f->index;
    acked = f->cc;
    matched = true;
    --in_flight_[f->index];
    s.in_flight_bytes -= f->cc.bytes;
    s.flights.erase(id);
  } else if (auto it = s.lost_by_order.find(id); it != s.lost_by_order.end()) {
    // An answer to a request RACK had declared lost: the network reordered, it did not drop,
    // so wait longer before calling a request lost. (One a timeout declared lost was merely
    // late, which says nothing about order.)
    if (it->second) s.loss.on_spurious(s.cc->round());
    s.lost_by_order.erase(it);
  }
  // Whatever this reply turns out to be, a block it does not deliver must be asked for again,
  // or it would be neither done, nor in flight, nor queued, and the fetch would stall on it.
  const auto ask_again = [&](bool first) {
    if (!matched || part_->is_done(acked_index) || in_flight_[acked_index] != 0) return;
    if (first)
      retransmit_.push_front(acked_index);
    else
      retransmit_.push_back(acked_index);
  };

  if (std::holds_alternative<protocol::token_reply>(r.body)) {
    // The server wants a (new) token echoed, after a restart say: the request was not lost,
    // so ask again at once, with the token the connection now holds, and cut nothing. It is
    // no progress, though: a server that never accepts its own tokens still times out.
    ask_again(true);
    return pump();
  }
  if (auto* e = std::get_if<protocol::error_reply>(&r.body)) {
    ask_again(false);
    if (e->code == errc::busy) {
      last_progress_ = now;  // alive, but loaded: slow down and ask again
      if (matched) s.cc->on_busy(s.in_flight_bytes, now);
      return;
    }
    // STAT already said the file is there: confirm before giving up, since a request damaged
    // on the way can draw a true "not found" for a path we never asked for.
    last_error_ = e->code;
    return drop(
        s, outcome::error_reply,
        fmt::format("{} refuses '{}' ({})", s.result.address, path_, protocol::to_string(e->code)));
  }
  auto* d = std::get_if<protocol::data_reply>(&r.body);
  if (d == nullptr) return ask_again(false);
  if (d->version != s.version) {
    ask_again(false);
    if (std::find(stale_.begin(), stale_.end(), d->version) != stale_.end()) return;
    return drop(s, outcome::version_changed,
                fmt::format("{} now serves another version of '{}'", s.result.address, path_));
  }
  const auto block = part_->block_size();
  const auto index = d->offset / block;
  if (d->offset % block != 0 || index >= part_->block_count()) return ask_again(false);
  if (d->length != part_->block_length(index)) {
    ask_again(false);
    if (d->length < part_->block_length(index))
      return drop(s, outcome::block_cap_changed,
                  fmt::format("{} now serves shorter blocks", s.result.address));
    return;
  }
  last_progress_ = now;
  // Only a whole block shows that blocks of this size pass: the last one may be short enough
  // to cross a path that drops the others.
  if (d->length == block) full_block_seen_ = true;
  // A block delivered is what the path model counts; token, busy and error replies are not.
  if (matched) s.cc->on_ack(acked, now, now - acked.sent, s.in_flight_bytes);
  if (part_->is_done(index)) {
    ++stats_.duplicates;
    ++s.result.duplicates;
  } else {
    part_->store(index, {d->payload, d->length});
    stats_.bytes_fetched += d->length;
    s.result.bytes += d->length;
    if (part_->done_blocks() == part_->block_count()) return finish(outcome::complete);
  }
  if (matched) detect_losses(s, now);
  pump();
}

void fetcher::trace(const source& s) const {
  if (!s.cc) return;
  static constexpr const char* modes[] = {"startup", "drain", "probe_bw", "probe_rtt"};
  log::debug(
      "{}: {} bw {:.2f} MB/s, min RTT {:.1f} ms, srtt {:.1f} ms, window {} B, in flight {} B, "
      "pacing {:.2f} MB/s, {} requests, {} retransmitted, reorder window x{}",
      s.result.address, modes[static_cast<int>(s.cc->state())], s.cc->bandwidth() / 1e6,
      ms(s.cc->min_rtt()), ms(s.conn->rtt().srtt()), s.cc->cwnd(), s.in_flight_bytes,
      s.cc->pacing_rate() / 1e6, s.result.requests, s.result.retransmits, s.loss.multiplier(s.cc->round()));
}

void fetcher::on_tick() {
  if (outcome_ != outcome::running) return;
  const auto now = clock::now();
  try {
    if (now - last_progress_ >= opt_.timeout) {
      std::string names;
      for (const auto& s : sources_)
        if (s.state != source_state::dropped)
          names += (names.empty() ? "" : ", ") + s.result.address;
      const auto port = sources_[0].conn->server().port();
      throw failure{exit_code::network,
                    fmt::format("no answer from {} for {:g} s (is ferryd running there? is UDP "
                                "port {} open?); rerun the same command to resume",
                                names, std::chrono::duration<double>(opt_.timeout).count(), port)};
    }
    const auto live = std::count_if(sources_.begin(), sources_.end(),
                                    [](auto& s) { return s.state == source_state::live; });
    for (auto& s : sources_) {
      if (s.state == source_state::silent) {
        if (now >= s.next_probe) {
          s.probe_id = s.conn->send(protocol::stat_request{path_});
          s.next_probe = now + probe_every;
        }
        continue;
      }
      if (s.state != source_state::live) continue;
      // A source that answers nothing at all while others do is set aside, so its blocks do
      // not wait out its backed-off timer; it is probed and used again once it answers.
      const auto silence = std::max<clock::duration>(silent_after, 4 * s.conn->rtt().srtt());
      if (live > 1 && !s.flights.empty() && now - s.last_heard >= silence) {
        log::warn("{} stopped answering; its blocks go to the others", s.result.address);
        ++s.result.suspensions;
        set_aside(s, source_state::silent);
        continue;
      }
      // RACK's reordering window may have passed since the last reply.
      detect_losses(s, now);
      // The tail, which RACK cannot see: anything older than the RTO is lost. The RTO alone
      // (RFC 6298 with a 20 ms floor) is tight for a path whose queue grows while the rate is
      // probed, and every spurious timeout costs a block twice, so it is at least 2 RTTs.
      const auto srtt = s.conn->rtt().srtt();
      const auto rto =
          std::max({s.conn->rtt().rto(), 2 * srtt, srtt + std::chrono::milliseconds{20}});
      bool timed_out = false;
      clock::time_point newest_lost{};
      std::uint64_t oldest_id = 0;
      while (const auto* oldest = s.flights.oldest(&oldest_id)) {
        if (now - oldest->cc.sent < rto) break;
        const auto f = *oldest;
        if (s.lost_by_order.size() >= max_remembered_losses) s.lost_by_order.clear();
        s.lost_by_order.emplace(oldest_id, false);
        s.flights.erase(oldest_id);
        declare_lost(s, f);
        timed_out = true;
        newest_lost = std::max(newest_lost, f.cc.sent);
      }
      // Back off once per round of timeouts, not once per request that timed out in it; and
      // when nothing at all came back for that long, the path may be gone: send little until
      // it answers again.
      if (timed_out && newest_lost > s.last_backoff) {
        s.conn->rtt().backoff();
        s.last_backoff = now;
        if (now - s.last_heard >= rto) s.cc->on_timeout();
        // Timeouts with not one block come back, though the server answered STAT: the path
        // may drop datagrams of this size without a word (an MTU black hole).
        // A loaded server can keep every block back for a while too, so this waits some
        // seconds, and only a part file that holds nothing yet is started again.
        if (!full_block_seen_ && ++silent_timeouts_ >= blackhole_timeouts &&
            now - transfer_started_ >= blackhole_after && no_whole_block_done() &&
            part_->block_size() > protocol::min_block_size)
          return finish(outcome::path_too_small);
      }
    }
    if (now - last_flush_ >= flush_every) {
      part_->flush();
      last_flush_ = now;
    }
    if (now - last_trace_ >= trace_every && log::current_level() == log::level::debug) {
      for (const auto& s : sources_) trace(s);
      last_trace_ = now;
    }
    if (opt_.on_progress && now - last_report_ >= progress_every) {
      opt_.on_progress(part_->done_bytes(), part_->size());
      last_report_ = now;
    }
    pump();
    flush_requests();
  } catch (...) {
    error_ = std::current_exception();
    finish(outcome::failed);
  }
}

}  // namespace ferry::client
