#include "client/congestion.hpp"

#include <algorithm>
#include <array>

namespace ferry::client {

namespace {
// BBR's constants (draft-cardwell-iccrg-bbr-congestion-control-00): a startup gain of 2/ln 2
// doubles the rate every round trip; ProbeBW cycles through eight phases of one min RTT each.
constexpr double startup_gain = 2.885;
constexpr double startup_cwnd_gain = 2.0;
constexpr double drain_gain = 1.0 / startup_gain;
constexpr double probe_bw_cwnd_gain = 1.5;
constexpr std::array<double, 8> gain_cycle{1.25, 0.75, 1, 1, 1, 1, 1, 1};
constexpr std::uint64_t bw_window_rounds = 10;
constexpr double full_bw_growth = 1.25;
constexpr int full_bw_rounds = 3;
// HyStart++ (RFC 9406): a round whose smallest RTT exceeds the last one's by an eighth, clamped
// to 4..16 ms, has met a queue, after enough samples to trust the minimum.
constexpr int delay_rise_samples = 8;
constexpr double conservative_gain = 1.5;
constexpr auto delay_rise_min = std::chrono::milliseconds{4};
constexpr auto delay_rise_max = std::chrono::milliseconds{16};
constexpr auto min_rtt_expiry = std::chrono::seconds{10};
constexpr auto probe_rtt_time = std::chrono::milliseconds{200};
// A round that loses more than this share of what it asked for is taken as congestion, not
// noise. Random loss of 5% each way loses about 10% of requests or their replies, so the bar
// sits well above that; below it, loss moves nothing.
constexpr double loss_ceiling_share = 0.3;
constexpr double loss_ceiling_beta = 0.7;
constexpr std::uint64_t loss_ceiling_min_segments = 20;
constexpr double busy_beta = 0.85;

double seconds(cc_clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

void windowed_max::reset(std::uint64_t round, double value) noexcept {
  s_[0] = s_[1] = s_[2] = sample{round, value};
}

void windowed_max::update(std::uint64_t round, double value, std::uint64_t window) noexcept {
  const sample v{round, value};
  if (value >= s_[0].value || round - s_[2].round > window) return reset(round, value);
  if (value >= s_[1].value)
    s_[2] = s_[1] = v;
  else if (value >= s_[2].value)
    s_[2] = v;
  // The best sample expired: the second and third move up, as in Linux's minmax_subwin_update.
  const auto dt = round - s_[0].round;
  if (dt > window) {
    s_[0] = s_[1];
    s_[1] = s_[2];
    s_[2] = v;
    if (round - s_[0].round > window) {
      s_[0] = s_[1];
      s_[1] = s_[2];
      s_[2] = v;
    }
  } else if (s_[1].round == s_[0].round && dt > window / 4) {
    s_[2] = s_[1] = v;
  } else if (s_[2].round == s_[1].round && dt > window / 2) {
    s_[2] = v;
  }
}

congestion::congestion(const config& c, cc_clock::time_point now) : cfg_{c} {
  if (cfg_.segment == 0) cfg_.segment = 1;
  if (cfg_.initial_cwnd == 0) cfg_.initial_cwnd = 32ull * cfg_.segment;
  cwnd_ = std::min(std::max(cfg_.initial_cwnd, min_cwnd()), cfg_.max_cwnd);
  const double rtt = std::max(seconds(cfg_.initial_rtt), 1e-4);
  pacing_rate_ = startup_gain * static_cast<double>(cwnd_) / rtt;
  delivered_time_ = first_sent_time_ = now;
  // Any phase but the one that drains, each as likely.
  cycle_index_ = static_cast<int>(cfg_.seed % (gain_cycle.size() - 1));
  if (cycle_index_ >= 1) ++cycle_index_;
  enter(mode::startup, now);
}

std::uint64_t congestion::min_cwnd() const noexcept {
  return std::max<std::uint64_t>(4ull * cfg_.segment, cfg_.min_cwnd_floor);
}

std::uint64_t congestion::probe_rtt_cwnd() const noexcept {
  // Half a bandwidth-delay product empties the queue as well as BBRv1's four segments do, and
  // keeps half the rate meanwhile (BBRv2).
  return std::max(min_cwnd(), bdp(0.5));
}

std::uint64_t congestion::bdp(double gain) const noexcept {
  if (!min_rtt_seen_ || max_bw_.get() <= 0) return cfg_.initial_cwnd;
  return static_cast<std::uint64_t>(gain * max_bw_.get() * seconds(min_rtt_));
}

void congestion::enter(mode m, cc_clock::time_point now) noexcept {
  mode_ = m;
  switch (m) {
    case mode::startup:
      // The rate doubles each round; the window is two estimated BDPs, as BBRv3's Startup, so
      // that the round in which the pipe fills overflows no more than one BDP of queue.
      pacing_gain_ = conservative_ ? conservative_gain : startup_gain;
      cwnd_gain_ = conservative_ ? probe_bw_cwnd_gain : startup_cwnd_gain;
      break;
    case mode::drain:
      pacing_gain_ = drain_gain;
      cwnd_gain_ = startup_cwnd_gain;
      break;
    case mode::probe_bw:
      // Never start in the phase that drains, which would slow a flow just out of Drain.
      if (cycle_index_ == 1) cycle_index_ = 2;
      pacing_gain_ = gain_cycle[static_cast<std::size_t>(cycle_index_)];
      cwnd_gain_ = probe_bw_cwnd_gain;
      cycle_stamp_ = now;
      lost_in_cycle_ = false;
      break;
    case mode::probe_rtt:
      pacing_gain_ = cwnd_gain_ = 1;
      probe_rtt_done_ = {};
      probe_rtt_round_done_ = false;
      break;
  }
}

sent_state congestion::on_send(std::uint32_t bytes, std::uint64_t in_flight,
                               cc_clock::time_point now) noexcept {
  // After an idle spell, the rate over the next flight starts now, not at the last reply.
  if (in_flight == 0) first_sent_time_ = delivered_time_ = now;
  return sent_state{now,        delivered_time_, first_sent_time_,
                    delivered_, bytes,           app_limited_until_ != 0};
}

void congestion::update_round(const sent_state& p) noexcept {
  round_start_ = false;
  if (p.delivered >= next_round_delivered_) {
    next_round_delivered_ = delivered_;
    ++round_;
    round_start_ = true;
  }
}

bool congestion::queue_rising() const noexcept {
  return round_samples_ >= delay_rise_samples && last_round_min_rtt_ != cc_clock::duration{} &&
         round_min_rtt_ >=
             last_round_min_rtt_ + std::clamp<cc_clock::duration>(last_round_min_rtt_ / 8,
                                                                  delay_rise_min, delay_rise_max);
}

void congestion::check_full_pipe(cc_clock::duration rtt) noexcept {
  if (filled_pipe_) return;
  if (round_start_) {
    if (round_samples_ >= delay_rise_samples) last_round_min_rtt_ = round_min_rtt_;
    round_samples_ = 0;
  }
  if (round_samples_++ == 0 || rtt < round_min_rtt_) round_min_rtt_ = rtt;
  // A queue is forming: go on more gently, at half again the rate a round instead of nearly
  // three times, as HyStart++'s conservative slow start does. It overflows a queue of one
  // bandwidth-delay product much less than full Startup, and still lets a flow that starts
  // beside a busy one push its way to its share, which ending Startup here would not.
  // Checked on every reply, since at Startup's rate a queue grows within one round.
  if (mode_ == mode::startup && !conservative_ && queue_rising()) {
    conservative_ = true;
    pacing_gain_ = conservative_gain;
    cwnd_gain_ = probe_bw_cwnd_gain;
  }
  if (!round_start_ || app_limited_until_ != 0) return;
  if (max_bw_.get() >= full_bw_ * full_bw_growth) {
    full_bw_ = max_bw_.get();
    full_bw_count_ = 0;
    return;
  }
  if (++full_bw_count_ >= full_bw_rounds) filled_pipe_ = true;
}

void congestion::update_gain_cycle(cc_clock::time_point now, std::uint64_t in_flight) noexcept {
  const bool full_length = now - cycle_stamp_ > min_rtt_;
  bool advance = full_length;
  if (pacing_gain_ > 1)
    advance = full_length && (lost_in_cycle_ || in_flight >= bdp(pacing_gain_));
  else if (pacing_gain_ < 1)
    advance = full_length || in_flight <= bdp(1);
  if (!advance) return;
  cycle_index_ = (cycle_index_ + 1) % static_cast<int>(gain_cycle.size());
  pacing_gain_ = gain_cycle[static_cast<std::size_t>(cycle_index_)];
  cycle_stamp_ = now;
  lost_in_cycle_ = false;
}

void congestion::update_min_rtt(cc_clock::time_point now, cc_clock::duration rtt,
                                std::uint64_t in_flight) noexcept {
  const bool expired = min_rtt_seen_ && now - min_rtt_stamp_ > min_rtt_expiry;
  // An RTT equal to the minimum refreshes it too (as BBRv2): a path that shows its own round
  // trip again, as it does in every phase that drains the queue, needs no ProbeRTT.
  if (!min_rtt_seen_ || rtt <= min_rtt_ || expired) {
    min_rtt_ = rtt;
    min_rtt_stamp_ = now;
    min_rtt_seen_ = true;
  }
  // After ten seconds without the min RTT, drain the queue for a moment to see the path's own
  // round trip, as BBR does; flows sharing a bottleneck then drain it together.
  if (expired && mode_ != mode::probe_rtt) {
    before_probe_rtt_ = filled_pipe_ ? mode::probe_bw : mode::startup;
    prior_cwnd_ = cwnd_;
    enter(mode::probe_rtt, now);
  }
  if (mode_ != mode::probe_rtt) return;
  if (probe_rtt_done_ == cc_clock::time_point{} && in_flight <= probe_rtt_cwnd()) {
    probe_rtt_done_ = now + std::max<cc_clock::duration>(probe_rtt_time, min_rtt_);
    probe_rtt_round_done_ = false;
    next_round_delivered_ = delivered_;
  } else if (probe_rtt_done_ != cc_clock::time_point{}) {
    if (round_start_) probe_rtt_round_done_ = true;
    if (probe_rtt_round_done_ && now >= probe_rtt_done_) {
      min_rtt_stamp_ = now;
      enter(before_probe_rtt_, now);
      // Back to the window it had, at once: growing it again from four segments would take
      // rounds whose low rate samples could push the real rate out of the filter.
      cwnd_ = std::max(cwnd_, prior_cwnd_);
    }
  }
}

void congestion::check_loss_ceiling() noexcept {
  if (!round_start_) return;
  const auto total = round_lost_ + round_acked_;
  // A round too short to judge is judged with the next ones, so a ceiling that left few bytes
  // in flight can still rise.
  if (total < loss_ceiling_min_segments * cfg_.segment) return;
  const double share = static_cast<double>(round_lost_) / static_cast<double>(total);
  if (share > loss_ceiling_share) {
    // Heavy loss: the model overestimates the path. Lower the bandwidth and cap what is in
    // flight, as BBRv2's inflight_hi does, instead of carrying on into a full queue.
    inflight_ceiling_ = std::max(
        min_cwnd(), static_cast<std::uint64_t>(loss_ceiling_beta * static_cast<double>(cwnd_)));
    max_bw_.reset(round_, max_bw_.get() * loss_ceiling_beta);
    filled_pipe_ = true;  // so Startup, if that is where it was, ends now
  } else if (inflight_ceiling_ != 0) {
    // A round with ordinary loss: let the ceiling rise again, a quarter each round.
    inflight_ceiling_ += inflight_ceiling_ / 4 + cfg_.segment;
    if (inflight_ceiling_ >= cfg_.max_cwnd) inflight_ceiling_ = 0;
  }
  round_lost_ = round_acked_ = 0;
}

void congestion::set_rate_and_window() noexcept {
  const double bw = max_bw_.get();
  if (bw > 0) {
    const double rate = pacing_gain_ * bw;
    // In Startup the rate only grows, so a slow first sample cannot stall the ramp.
    if (filled_pipe_ || conservative_ || rate > pacing_rate_) pacing_rate_ = rate;
  }
  // The window: cwnd_gain bandwidth-delay products, plus a few segments for the replies the
  // server sends together in one burst.
  const std::uint64_t target = bdp(cwnd_gain_) + 3ull * cfg_.segment;
  if (filled_pipe_)
    cwnd_ = std::min(cwnd_ + cfg_.segment, target);
  else if (cwnd_ < target || delivered_ < cfg_.initial_cwnd)
    cwnd_ += cfg_.segment;
  cwnd_ = std::max(cwnd_, min_cwnd());
  if (mode_ == mode::probe_rtt) cwnd_ = std::min(cwnd_, probe_rtt_cwnd());
  if (inflight_ceiling_ != 0) cwnd_ = std::min(cwnd_, inflight_ceiling_);
  cwnd_ = std::min(cwnd_, cfg_.max_cwnd);
}

void congestion::sample_rate(const sent_state& p, cc_clock::time_point now) noexcept {
  // Once the pipe is full, one sample a round: what the round delivered over its length. A
  // sample per reply, as BBR takes, spans a single RTT whose ends move with when the client
  // happened to read its socket, and the maximum of hundreds of such samples a round sits a few
  // percent above the path's rate (measured: 12.4 MB/s of blocks through a 100 Mbit/s link
  // that carries 11.5), which keeps a queue and overflows it. The maximum of ten round
  // averages does not.
  if (round_start_) {
    if (round_began_ != cc_clock::time_point{} && now > round_began_ && filled_pipe_) {
      const double rate =
          static_cast<double>(delivered_ - round_began_delivered_) / seconds(now - round_began_);
      if (!round_app_limited_ || rate >= max_bw_.get())
        max_bw_.update(round_, rate, bw_window_rounds);
    }
    round_began_ = now;
    round_began_delivered_ = delivered_;
    round_app_limited_ = app_limited_until_ != 0;
  }
  if (filled_pipe_) return;
  // In Startup, a sample per reply, so the ramp sees the rate grow without waiting a round: the
  // delivery rate over this request's flight. The longer of the send and the ack spans is
  // used, so replies that arrive together (the server sends runs of them at once) do not read
  // as a burst of bandwidth; a span shorter than the min RTT is not trusted at all.
  const auto interval = std::max(p.sent - p.first_sent_time, now - p.delivered_time);
  if (interval > cc_clock::duration::zero() && (!min_rtt_seen_ || interval >= min_rtt_)) {
    const double rate = static_cast<double>(delivered_ - p.delivered) / seconds(interval);
    if (!p.app_limited || rate >= max_bw_.get()) max_bw_.update(round_, rate, bw_window_rounds);
  }
}

void congestion::on_ack(const sent_state& p, cc_clock::time_point now, cc_clock::duration rtt,
                        std::uint64_t in_flight) noexcept {
  delivered_ += p.bytes;
  delivered_time_ = now;
  round_acked_ += p.bytes;
  if (app_limited_until_ != 0 && delivered_ > app_limited_until_) app_limited_until_ = 0;
  if (p.sent > first_sent_time_) first_sent_time_ = p.sent;

  update_round(p);
  sample_rate(p, now);
  check_loss_ceiling();
  check_full_pipe(rtt);
  if (mode_ == mode::startup && filled_pipe_) enter(mode::drain, now);
  if (mode_ == mode::drain && in_flight <= bdp(1)) enter(mode::probe_bw, now);
  if (mode_ == mode::probe_bw) update_gain_cycle(now, in_flight + p.bytes);
  update_min_rtt(now, rtt, in_flight);
  set_rate_and_window();
}

void congestion::on_loss(const sent_state& p, cc_clock::time_point) noexcept {
  round_lost_ += p.bytes;
  lost_in_cycle_ = true;
}

void congestion::on_timeout() noexcept {
  // Back to the smallest window; it grows again by a block a reply, doubling each round trip.
  cwnd_ = std::min(min_cwnd(), cfg_.max_cwnd);
}

void congestion::on_busy(std::uint64_t in_flight, cc_clock::time_point) noexcept {
  // The server has more work queued than it takes: hold what is in flight below this, and
  // the rate, each by 15% once a round trip, until replies show it can take more.
  if (busy_seen_ && busy_round_ == round_) return;
  busy_seen_ = true;
  busy_round_ = round_;
  const auto cap =
      std::max(min_cwnd(), static_cast<std::uint64_t>(busy_beta * static_cast<double>(in_flight)));
  inflight_ceiling_ = inflight_ceiling_ == 0 ? cap : std::min(inflight_ceiling_, cap);
  cwnd_ = std::min(cwnd_, inflight_ceiling_);
  if (max_bw_.get() > 0) max_bw_.reset(round_, max_bw_.get() * busy_beta);
  pacing_rate_ *= busy_beta;
}

void congestion::on_app_limited(std::uint64_t in_flight) noexcept {
  app_limited_until_ = std::max<std::uint64_t>(delivered_ + in_flight, 1);
}

}  // namespace ferry::client
