// One transfer of the fetcher: its set-up on the engine's loop, the replies, the tick that
// finds losses by time and silent sources, and its end.

#include "client/fetch.hpp"

#include <sys/socket.h>

#include <algorithm>

#include "client/errors.hpp"
#include "client/fetch_tuning.hpp"
#include "common/digest.hpp"
#include "common/log.hpp"

namespace ferry::client {

using protocol::errc;
using namespace fetch_tuning;

namespace {
double ms(clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
}  // namespace

task<fetcher::outcome> fetcher::transfer(part_file& part) {
  part_ = &part;
  in_flight_.assign(part.block_count(), 0);
  retransmit_.clear();
  scan_ = 0;
  outcome_ = part.done_blocks() == part.block_count() ? outcome::complete : outcome::running;
  error_ = nullptr;
  // last_progress_ is not reset here: a server whose blocks keep starting the transfer over
  // (another version than its STAT names, shorter blocks than it says it sends) makes no
  // progress, and --timeout must end that too.
  last_flush_ = transfer_started_ = clock::now();
  full_block_seen_ = false;
  silent_timeouts_ = 0;
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
    s.last_heard = s.next_probe = transfer_started_;
  }
  if (outcome_ == outcome::complete) co_return outcome_;

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
    engine_->set_stream(*s.conn, [this, &s](const codec::decoded_reply& r) { on_reply(s, r); });
    // Blocks point into the connection's receive buffer until they are written.
    s.conn->set_batch_end([this] { write_blocks(); });
  }
  pump();
  flush_requests();
  while (outcome_ == outcome::running) co_await done_->wait();
  for (auto& s : sources_) {
    engine_->set_stream(*s.conn, nullptr);
    s.conn->set_batch_end(nullptr);
    engine_->cancel(std::exchange(s.probe_key, 0));
    s.probing = false;
  }
  uv_timer_stop(timer.get());
  part.flush();
  if (opt_.on_progress) opt_.on_progress(part.done_bytes(), part.size());
  if (error_) std::rethrow_exception(error_);
  co_return outcome_;
}

void fetcher::write_blocks() noexcept {
  try {
    part_->write_pending();
    if (opt_.stream_fd >= 0) stream_out();
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
  done_->open();
}

std::size_t fetcher::usable_sources() const noexcept {
  return static_cast<std::size_t>(std::count_if(
      sources_.begin(), sources_.end(), [](auto& s) { return s.state != source_state::dropped; }));
}

void fetcher::set_aside(source& s, source_state state) {
  // Whatever it still owes goes to the others at once.
  s.flights.for_each([&](std::uint64_t, const flight& f) {
    release(s, f);
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

void fetcher::on_probe_reply(source& s, const protocol::reply& body) {
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
      // Its first answer: a mirror that never served this file is set aside, as at the start.
      const auto ref =
          std::find_if(sources_.begin(), sources_.end(), [](auto& o) { return o.verified; });
      const auto why = mismatch(s, *st, *ref);
      s.state = source_state::dropped;
      if (usable_sources() == 0) {
        error_ = std::make_exception_ptr(why);
        return finish(outcome::failed);
      }
      log::warn("{}; fetching it from the others", why.what());
      return;
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

void fetcher::probe(source& s, clock::time_point now) {
  s.next_probe = now + probe_every;
  s.probing = true;
  const auto key = engine_->start(
      *s.conn, protocol::stat_request{path_}, {probe_every}, [this, &s](request_engine::outcome o) {
        s.probing = false;
        s.probe_key = 0;
        // No answer: it is still silent, and the next probe asks again.
        auto* r = std::get_if<protocol::reply>(&o);
        if (r == nullptr || outcome_ != outcome::running || s.state != source_state::silent) return;
        s.last_heard = clock::now();
        try {
          on_probe_reply(s, *r);
        } catch (...) {
          if (!error_) error_ = std::current_exception();
          finish(outcome::failed);
        }
      });
  if (s.probing) s.probe_key = key;
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
  heard_since_progress_ = true;
  if (s.state == source_state::dropped) return;
  if (s.state == source_state::silent) return;  // its probe's answer goes to the probe
  std::uint64_t acked_index = 0;
  bool matched = false;
  std::uint16_t run_length = 1;
  sent_state acked{};
  if (const auto* f = s.flights.find(id); f != nullptr) {
    s.conn->rtt().sample(now - f->cc.sent);
    s.loss.on_ack(f->seq, now - f->cc.sent);
    acked_index = f->index;
    acked = f->cc;
    run_length = f->run_length;
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
    if (!matched || !wanted(acked_index)) return;
    if (first)
      retransmit_.push_front(acked_index);
    else
      retransmit_.push_back(acked_index);
  };

  if (std::holds_alternative<protocol::token_reply>(r.body)) {
    // The server wants a (new) token echoed, after a restart say: the request was not lost,
    // so ask again at once, with the token the connection now holds, and cut nothing. It is
    // no progress, though: a server that never accepts its own tokens still times out.
    // A GET-RUN drew this one reply for all its blocks.
    ask_again(true);
    retire_run(s, id, run_length);
    return pump();
  }
  if (auto* e = std::get_if<protocol::error_reply>(&r.body)) {
    ask_again(false);
    if (e->code == errc::malformed) {
      // A server never answers a request it decoded with "malformed", and one damaged on the
      // way draws no answer at all: this is a server from before GET-RUN, answering one. Ask it
      // for one block at a time from now on, the rest of this run too (not lost: never queued);
      // the other runs in flight draw the same answer and come here as well.
      if (s.runs)
        log::info("{} does not take GET-RUN; asking it for one block at a time", s.result.address);
      s.runs = false;
      retire_run(s, id, run_length);
      return pump();
    }
    if (e->code == errc::busy) {
      // Alive, but loaded: slow down and ask again. It is no progress: a server that says only
      // this for the whole timeout is given up on, as one that says nothing.
      busy_since_progress_ = true;
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
  mark_progress();
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
      s.cc->pacing_rate() / 1e6, s.result.requests, s.result.retransmits,
      s.loss.multiplier(s.cc->round()));
}

failure fetcher::no_progress() const {
  std::string names;
  for (const auto& s : sources_)
    if (s.state != source_state::dropped) names += (names.empty() ? "" : ", ") + s.result.address;
  if (names.empty())
    for (const auto& s : sources_) names += (names.empty() ? "" : ", ") + s.result.address;
  const auto seconds = std::chrono::duration<double>(opt_.timeout).count();
  if (heard_since_progress_ && !busy_since_progress_)
    return failure{exit_code::network,
                   fmt::format("{} answered for {:g} s without sending a block of '{}' that "
                               "fits what it said of the file (its version and size); rerun "
                               "the same command to resume",
                               names, seconds, path_)};
  return no_answer(names, seconds, sources_[0].conn->server().port(), busy_since_progress_,
                   "rerun the same command to resume");
}

void fetcher::on_tick() {
  if (outcome_ != outcome::running) return;
  const auto now = clock::now();
  try {
    if (now - last_progress_ >= opt_.timeout) throw no_progress();
    const auto live = std::count_if(sources_.begin(), sources_.end(),
                                    [](auto& s) { return s.state == source_state::live; });
    for (auto& s : sources_) {
      if (s.state == source_state::silent) {
        if (!s.probing && now >= s.next_probe) probe(s, now);
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
        newest_lost = std::max(newest_lost, oldest->cc.sent);
        declare_lost(s, oldest_id, false);
        timed_out = true;
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
