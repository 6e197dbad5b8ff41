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
constexpr double min_window = 2;
// Past this, loss is left to the timeout; a higher bar would only slow real loss recovery.
constexpr std::uint64_t max_reorder_threshold = 64;
constexpr std::size_t max_remembered_losses = 4096;
constexpr auto tick = std::chrono::milliseconds{5};
constexpr auto flush_every = std::chrono::milliseconds{500};
constexpr auto progress_every = std::chrono::milliseconds{200};
// Error replies to GETs that a STAT of the same version then contradicts; past this many the
// server is taken at its word.
constexpr int max_contradicted_errors = 32;

double seconds_since(clock::time_point t) {
  return std::chrono::duration<double>(clock::now() - t).count();
}

}  // namespace

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
    : conn_{conn}, path_{std::move(remote_path)}, out_{std::move(out)}, opt_{std::move(opt)} {}

fetch_result fetcher::run() {
  const auto started = clock::now();
  auto reply = conn_.call(protocol::stat_request{path_}, opt_.timeout);
  if (auto* e = std::get_if<protocol::error_reply>(&reply)) throw_refused(path_, e->code);
  auto* st = std::get_if<protocol::stat_reply>(&reply);
  if (st == nullptr) throw failure{exit_code::internal, "unexpected reply to STAT"};
  if (st->type != protocol::entry_type::file) throw_refused(path_, errc::not_regular);

  auto version = st->version;
  auto block = choose_block_size(conn_, opt_.block_size, st->max_block);
  log::debug("{}: {} bytes; block size {} (path MTU {}, server cap {})", path_, version.size, block,
             conn_.path_mtu(), st->max_block);
  part_file part{out_, version, block};
  if (part.resumed())
    log::info("{}: resuming, {} of {} blocks already in {}", path_, part.done_blocks(),
              part.block_count(), part.data_path().string());
  if (part.resumed() && part.block_size() != block)
    log::info("resuming with the block size of the earlier run, {} bytes", part.block_size());
  stats_.resumed_bytes = part.done_bytes();
  bool retried_digest = false;

  for (;;) {
    const auto o = transfer(part, version);
    if (o == outcome::complete) {
      part.flush();
      protocol::digest128 local;
      try {
        local = part.digest();
      } catch (const std::exception& e) {
        throw failure{exit_code::local_io, fmt::format("cannot read back '{}': {}",
                                                       part.data_path().string(), e.what())};
      }
      const auto remote = stat_with_digest(conn_, path_, opt_.timeout);
      if (remote.version != version) {
        // Changed after our last block but before the check: the data may be mixed.
        stale_.push_back(version);
        version = remote.version;
      } else if (remote.digest == local) {
        stats_.digest = local;
        break;
      } else if (!retried_digest) {
        log::warn("{}: digest mismatch, fetching the whole file again", path_);
        retried_digest = true;
        part.restart(version, part.block_size());
        continue;
      } else {
        part.restart(version, part.block_size());  // nothing in it can be trusted
        throw failure{exit_code::integrity,
                      fmt::format("{}: digest mismatch after a full refetch (local {}, server {})",
                                  path_, to_string(local), to_string(remote.digest))};
      }
    } else {
      // A reply named another version, or a smaller block cap: ask what the file is now.
      auto now = conn_.call(protocol::stat_request{path_}, opt_.timeout);
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
        continue;
      }
      if (cur->version == version) continue;  // a late reply about an old version
      stale_.push_back(version);
      version = cur->version;
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
  stats_.corrupt = conn_.malformed();
  return stats_;
}

fetcher::outcome fetcher::transfer(part_file& part, const protocol::file_version& version) {
  part_ = &part;
  version_ = version;
  in_flight_.assign(part.block_count(), 0);
  flights_.clear();
  lost_by_order_.clear();
  order_.clear();
  retransmit_.clear();
  scan_ = 0;
  first_id_ = conn_.next_id();
  outcome_ = part.done_blocks() == part.block_count() ? outcome::complete : outcome::running;
  error_ = nullptr;
  last_progress_ = last_flush_ = clock::now();
  if (opt_.max_window != 0) {
    max_window_ = opt_.max_window;
  } else {
    // Never ask for more than the receive buffer holds, or the kernel drops the surplus.
    // The kernel counts its own overhead per datagram, hence the margin.
    const auto per_block = static_cast<std::size_t>(part.block_size()) + 512;
    max_window_ = static_cast<std::uint32_t>(
        std::clamp<std::size_t>(conn_.receive_buffer() / per_block, 8, 8192));
  }
  cwnd_ = std::min<double>(16, max_window_);
  if (outcome_ == outcome::complete) return outcome_;

  uv_owned<uv_timer_t> timer{conn_.loop(), uv_timer_init};
  timer.get()->data = this;
  uv_timer_start(
      timer.get(), [](uv_timer_t* t) { static_cast<fetcher*>(t->data)->on_tick(); }, tick.count(),
      tick.count());
  // Ctrl-C or a polite kill: record every finished block before leaving, so a rerun fetches
  // none of them again.
  uv_owned<uv_signal_t> sigint{conn_.loop(), uv_signal_init};
  uv_owned<uv_signal_t> sigterm{conn_.loop(), uv_signal_init};
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
  conn_.set_handler([this](const codec::decoded_reply& r) { on_reply(r); });
  pump();
  if (outcome_ == outcome::running) uv_run(conn_.loop(), UV_RUN_DEFAULT);
  conn_.set_handler(nullptr);
  uv_timer_stop(timer.get());
  part.flush();
  if (opt_.on_progress) opt_.on_progress(part.done_bytes(), part.size());
  if (error_) std::rethrow_exception(error_);
  return outcome_;
}

void fetcher::finish(outcome o) {
  outcome_ = o;
  uv_stop(conn_.loop());
}

void fetcher::send_block(std::uint64_t index, bool retransmit) {
  protocol::get_request req{path_, index * part_->block_size(), part_->block_size()};
  const auto id = conn_.send(req);
  flights_.emplace(id, flight{index, clock::now(), seq_++});
  order_.push_back(id);
  ++in_flight_[index];
  ++stats_.requests;
  if (retransmit) ++stats_.retransmits;
}

void fetcher::pump() {
  while (outcome_ == outcome::running && static_cast<double>(flights_.size()) < cwnd_) {
    if (!retransmit_.empty()) {
      const auto index = retransmit_.front();
      retransmit_.pop_front();
      if (!part_->is_done(index) && in_flight_[index] == 0) send_block(index, true);
      continue;
    }
    while (scan_ < part_->block_count() && (part_->is_done(scan_) || in_flight_[scan_] != 0))
      ++scan_;
    if (scan_ >= part_->block_count()) break;
    send_block(scan_++, false);
  }
}

void fetcher::declare_lost(const flight& f, bool by_timeout) {
  --in_flight_[f.index];
  if (!part_->is_done(f.index) && in_flight_[f.index] == 0) retransmit_.push_back(f.index);
  // One window reduction per round trip, as NewReno's recovery period.
  if (f.sent > recovery_start_) {
    prior_cwnd_ = cwnd_;
    prior_ssthresh_ = ssthresh_;
    undone_ = by_timeout;  // a timeout is never undone
    ssthresh_ = std::max(cwnd_ / 2, min_window);
    cwnd_ = by_timeout ? min_window : ssthresh_;
    recovery_start_ = clock::now();
  }
}

void fetcher::on_reply(const codec::decoded_reply& r) {
  const auto id = r.hdr.request_id;
  if (id < first_id_ || id >= conn_.next_id() || outcome_ != outcome::running) return;
  const auto now = clock::now();
  std::uint64_t acked_seq = 0, acked_index = 0;
  bool matched = false;
  if (auto it = flights_.find(id); it != flights_.end()) {
    conn_.rtt().sample(now - it->second.sent);
    acked_seq = it->second.seq;
    acked_index = it->second.index;
    matched = true;
    --in_flight_[it->second.index];
    flights_.erase(it);
  } else if (lost_by_order_.erase(id) != 0) {
    // The network reordered, it did not drop: wait for more before calling a request lost, and
    // take back the window cut this false loss caused (as RACK and F-RTO do).
    reorder_threshold_ = std::min(reorder_threshold_ * 2, max_reorder_threshold);
    if (!undone_) {
      cwnd_ = std::max(cwnd_, prior_cwnd_);
      ssthresh_ = std::max(ssthresh_, prior_ssthresh_);
      undone_ = true;
    }
  }

  if (std::holds_alternative<protocol::token_reply>(r.body)) {
    // The server wants a (new) token echoed, after a restart say: the request was not lost,
    // so ask again at once, with the token the connection now holds, and cut nothing. It is
    // no progress, though: a server that never accepts its own tokens still times out.
    if (matched && !part_->is_done(acked_index) && in_flight_[acked_index] == 0)
      retransmit_.push_front(acked_index);
    return pump();
  }
  if (auto* e = std::get_if<protocol::error_reply>(&r.body)) {
    if (e->code == errc::busy) {
      last_progress_ = now;  // alive, but loaded: slow down and ask again
      if (matched) {
        ssthresh_ = std::max(cwnd_ / 2, min_window);
        cwnd_ = ssthresh_;
        if (!part_->is_done(acked_index) && in_flight_[acked_index] == 0)
          retransmit_.push_back(acked_index);
      }
      return;
    }
    // STAT already said the file is there: confirm before giving up, since a request damaged
    // on the way can draw a true "not found" for a path we never asked for.
    last_error_ = e->code;
    return finish(outcome::error_reply);
  }
  auto* d = std::get_if<protocol::data_reply>(&r.body);
  if (d == nullptr) return;
  if (d->version != version_) {
    if (std::find(stale_.begin(), stale_.end(), d->version) != stale_.end()) return;
    return finish(outcome::version_changed);
  }
  const auto block = part_->block_size();
  const auto index = d->offset / block;
  if (d->offset % block != 0 || index >= part_->block_count()) return;
  if (d->length != part_->block_length(index)) {
    if (d->length < part_->block_length(index)) return finish(outcome::block_cap_changed);
    return;
  }
  last_progress_ = now;
  if (part_->is_done(index)) {
    ++stats_.duplicates;
  } else {
    try {
      part_->store(index, {d->payload, d->length});
    } catch (...) {
      error_ = std::current_exception();
      return finish(outcome::failed);
    }
    stats_.bytes_fetched += d->length;
    cwnd_ += cwnd_ < ssthresh_ ? 1.0 : 1.0 / cwnd_;
    cwnd_ = std::min<double>(cwnd_, max_window_);
    if (part_->done_blocks() == part_->block_count()) return finish(outcome::complete);
  }
  // Requests sent well before this one and still unanswered are taken as lost.
  if (matched) {
    while (!order_.empty()) {
      auto it = flights_.find(order_.front());
      if (it == flights_.end()) {
        order_.pop_front();
        continue;
      }
      if (it->second.seq + reorder_threshold_ > acked_seq) break;
      const auto f = it->second;
      if (lost_by_order_.size() >= max_remembered_losses) lost_by_order_.clear();
      lost_by_order_.emplace(it->first, f.seq);
      flights_.erase(it);
      order_.pop_front();
      declare_lost(f, false);
    }
  }
  pump();
}

void fetcher::on_tick() {
  if (outcome_ != outcome::running) return;
  const auto now = clock::now();
  try {
    if (now - last_progress_ >= opt_.timeout) {
      throw failure{
          exit_code::network,
          fmt::format("no answer from {} for {:g} s (is ferryd running there? is UDP port {} "
                      "open?); rerun the same command to resume",
                      to_string(conn_.server()),
                      std::chrono::duration<double>(opt_.timeout).count(), conn_.server().port())};
    }
    // Anything older than the RTO is lost; back the timer off if nothing got through.
    const auto rto = conn_.rtt().rto();
    bool timed_out = false;
    clock::time_point newest_lost{};
    while (!order_.empty()) {
      auto it = flights_.find(order_.front());
      if (it == flights_.end()) {
        order_.pop_front();
        continue;
      }
      if (now - it->second.sent < rto) break;
      const auto f = it->second;
      flights_.erase(it);
      order_.pop_front();
      declare_lost(f, true);
      timed_out = true;
      newest_lost = std::max(newest_lost, f.sent);
    }
    // Back off once per round of timeouts, not once per request that timed out in it.
    if (timed_out && newest_lost > last_backoff_) {
      conn_.rtt().backoff();
      last_backoff_ = now;
    }
    if (now - last_flush_ >= flush_every) {
      part_->flush();
      last_flush_ = now;
    }
    if (opt_.on_progress && now - last_report_ >= progress_every) {
      opt_.on_progress(part_->done_bytes(), part_->size());
      last_report_ = now;
    }
    pump();
  } catch (...) {
    error_ = std::current_exception();
    finish(outcome::failed);
  }
}

}  // namespace ferry::client
