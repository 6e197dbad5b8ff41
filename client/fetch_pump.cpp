// The fetcher's sending side: which block each source is asked for next, when its window and
// pacing let it, and which of its requests are lost, by order and time (RACK).

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

void fetcher::send_blocks(source& s, std::uint64_t index, std::uint16_t count, bool retransmit) {
  protocol::get_request req{path_, index * part_->block_size(), part_->block_size(), count};
  const auto now = clock::now();
  if (s.flights.empty()) s.last_heard = std::max(s.last_heard, now);
  const auto id = s.conn->queue(req);
  ++stats_.datagrams;
  for (std::uint16_t i = 0; i < count; ++i) {
    const auto bytes = static_cast<std::uint32_t>(part_->block_length(index + i));
    s.flights.add(id + i, flight{index + i, s.cc->on_send(bytes, s.in_flight_bytes, now), s.seq++,
                                 i == 0 ? count : std::uint16_t{1}});
    s.in_flight_bytes += bytes;
    s.pace_tokens -= bytes;
    ++in_flight_[index + i];
  }
  stats_.requests += count;
  s.result.requests += count;
  if (retransmit) {
    stats_.retransmits += count;
    s.result.retransmits += count;
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

fetcher::pump_result fetcher::pump_source(source& s) {
  while (!retransmit_.empty()) {
    const auto index = retransmit_.front();
    retransmit_.pop_front();
    if (!wanted(index)) continue;
    send_blocks(s, index, 1, true);
    return pump_result::sent;
  }
  while (scan_ < part_->block_count() && !wanted(scan_)) ++scan_;
  if (scan_ < part_->block_count()) {
    // Blocks that follow each other and were never asked for go out as one GET-RUN, as many as
    // the pacing and the window let go now: a request datagram for several blocks, where the
    // server still answers each block on its own.
    std::uint64_t n = 1;
    if (s.runs && opt_.max_run > 1) {
      const std::uint64_t block = part_->block_size();
      const auto by_pace = static_cast<std::uint64_t>(std::max(s.pace_tokens, 0.0)) / block + 1;
      const auto by_window = (s.cc->cwnd() - s.in_flight_bytes + block - 1) / block;
      const auto most = std::min<std::uint64_t>({opt_.max_run, by_pace, by_window});
      while (n < most && scan_ + n < part_->block_count() && wanted(scan_ + n)) ++n;
      // When the window, not the pacing, is what holds requests back (on a short path, where
      // each reply frees room for one block), wait for room for a millisecond's worth, as TCP
      // sizes its TSO bursts, rather than ask block by block: the window is several times
      // that, and the replies on their way free the room within microseconds.
      const auto quantum = std::clamp<std::uint64_t>(
          static_cast<std::uint64_t>(s.cc->pacing_rate() / 1000.0) / block, 1,
          std::min<std::uint64_t>(opt_.max_run,
                                  std::max<std::uint64_t>(1, s.cc->cwnd() / block / 4)));
      if (n < quantum && n == by_window && by_window < by_pace && s.in_flight_bytes > 0)
        return pump_result::waiting;
    }
    send_blocks(s, scan_, static_cast<std::uint16_t>(n), false);
    scan_ += n;
    return pump_result::sent;
  }
  // Near the end, ask a second source for what the others still owe, so one slow server
  // cannot hold up the finish.
  std::uint64_t index = 0;
  if (sources_.size() > 1 && endgame_pick(s, index)) {
    send_blocks(s, index, 1, false);
    return pump_result::sent;
  }
  if (tail_pick(s, index)) {
    send_blocks(s, index, 1, true);
    return pump_result::sent;
  }
  return pump_result::nothing;
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
  const auto overdue =
      s.conn->rtt().has_sample()
          ? srtt + std::max(s.loss.window(s.cc->min_rtt(), srtt, s.cc->round()), srtt / 2) +
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
  c.initial_cwnd =
      std::max<std::uint64_t>(std::min<std::uint64_t>({32ull * c.segment, std::uint64_t{1} << 20,
                                                       s.conn->receive_buffer()}),
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
      const auto r = pump_source(s);
      if (r == pump_result::sent) {
        sent = true;
      } else if (r == pump_result::nothing && s.in_flight_bytes < s.cc->cwnd()) {
        // Nothing left to ask although the window is open: the end of the file.
        s.cc->on_app_limited(s.in_flight_bytes);
      }
    }
  }
  next_source_ = (next_source_ + 1) % n;
}

void fetcher::release(source& s, const flight& f) {
  --in_flight_[f.index];
  s.in_flight_bytes -= f.cc.bytes;
  if (wanted(f.index)) retransmit_.push_back(f.index);
}

void fetcher::retire_run(source& s, std::uint64_t head_id, std::uint16_t length) {
  for (std::uint16_t i = 1; i < length; ++i) {
    const auto* f = s.flights.find(head_id + i);
    if (f == nullptr) continue;
    const auto gone = *f;
    s.flights.erase(head_id + i);
    release(s, gone);
  }
}

void fetcher::declare_lost(source& s, std::uint64_t id, bool by_order) {
  const auto f = *s.flights.find(id);
  // Remembered, so that an answer after all can show the loss spurious (see handle_reply).
  if (s.lost_by_order.size() >= max_remembered_losses) s.lost_by_order.clear();
  s.lost_by_order.emplace(id, by_order);
  s.flights.erase(id);
  release(s, f);
  s.cc->on_loss(f.cc, clock::now());
}

std::size_t fetcher::detect_losses(source& s, clock::time_point now) {
  const auto window = s.loss.window(s.cc->min_rtt(), s.conn->rtt().srtt(), s.cc->round());
  std::size_t n = 0;
  std::uint64_t oldest_id = 0;
  while (const auto* oldest = s.flights.oldest(&oldest_id)) {
    if (!s.loss.lost(oldest->seq, oldest->cc.sent, now, window)) break;
    declare_lost(s, oldest_id, true);
    ++n;
  }
  return n;
}

}  // namespace ferry::client
