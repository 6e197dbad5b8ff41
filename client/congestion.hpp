#pragma once

// The client's congestion control: a model of the path, as BBR (draft-cardwell-iccrg-bbr-
// congestion-control) builds it, from the rate at which replies arrive and the smallest round
// trip seen. The client paces its GETs at the model's rate and keeps one and a half
// bandwidth-delay products of them in flight (two while it ramps up). A random loss does not
// move the model, so a lossy long path runs at its rate, where a window halved on every loss
// (Reno, CUBIC) runs at a fraction of it.
//
// It needs no socket: the fetcher tells it of every GET sent, answered and lost, with the time,
// and asks it how many bytes may be in flight and how fast to send. Tests drive it on scripted
// paths the same way.

#include <chrono>
#include <cstdint>

namespace ferry::client {

using cc_clock = std::chrono::steady_clock;

// What the controller notes about a request when it is sent, and reads back when its reply
// comes: the delivery rate over its flight is (bytes delivered since) / (time since).
struct sent_state {
  cc_clock::time_point sent{};
  cc_clock::time_point delivered_time{};   // when `delivered` was last advanced, at send
  cc_clock::time_point first_sent_time{};  // the send time of the last reply seen, at send
  std::uint64_t delivered = 0;             // bytes delivered when this was sent
  std::uint32_t bytes = 0;
  bool app_limited = false;  // sent while the fetcher had less to ask than it could
};

// A running maximum over a window of rounds, kept as three samples (Kathleen Nichols' algorithm,
// as Linux's win_minmax), so a faster round replaces slower ones at once and an old maximum
// expires after `window` rounds.
class windowed_max {
 public:
  void reset(std::uint64_t round, double value) noexcept;
  void update(std::uint64_t round, double value, std::uint64_t window) noexcept;
  [[nodiscard]] double get() const noexcept { return s_[0].value; }

 private:
  struct sample {
    std::uint64_t round = 0;
    double value = 0;
  };
  sample s_[3];
};

class congestion {
 public:
  enum class mode { startup, drain, probe_bw, probe_rtt };

  struct config {
    std::uint32_t segment = 1390;  // the block size: bytes a request asks for
    std::uint64_t max_cwnd = 128ull
                             << 20;    // bytes in flight at most (1 Gbit/s at 500 ms is 62.5 MB)
    std::uint64_t initial_cwnd = 0;    // 0: 32 segments
    std::uint64_t min_cwnd_floor = 0;  // 0: 4 segments
    cc_clock::duration initial_rtt = std::chrono::milliseconds{100};
    std::uint64_t seed = 1;  // where the ProbeBW gain cycle starts, so flows do not move in step
  };

  explicit congestion(const config& c, cc_clock::time_point now);

  // A request for `bytes` is sent now; `in_flight` is the bytes in flight before it.
  [[nodiscard]] sent_state on_send(std::uint32_t bytes, std::uint64_t in_flight,
                                   cc_clock::time_point now) noexcept;
  // Its reply came, `rtt` after it was sent; `in_flight` is the bytes still in flight after it.
  void on_ack(const sent_state& p, cc_clock::time_point now, cc_clock::duration rtt,
              std::uint64_t in_flight) noexcept;
  // It is taken as lost (its bytes are no longer in flight).
  void on_loss(const sent_state& p, cc_clock::time_point now) noexcept;
  // Nothing was answered for a whole retransmission timeout: the path may have gone, so the
  // window goes back to its smallest (four blocks, or the configured floor) and grows again
  // with the replies.
  void on_timeout() noexcept;
  // The server answered `busy`: it is the bottleneck. Caps what is in flight and the rate.
  void on_busy(std::uint64_t in_flight, cc_clock::time_point now) noexcept;
  // The fetcher has nothing to ask although the window is open (the end of the file): rate
  // samples from here on measure the fetcher, not the path, and may only raise the estimate.
  void on_app_limited(std::uint64_t in_flight) noexcept;

  // Bytes that may be in flight.
  [[nodiscard]] std::uint64_t cwnd() const noexcept { return cwnd_; }
  // Bytes per second to send requests' replies at: requests are paced so the data arrives so.
  [[nodiscard]] double pacing_rate() const noexcept { return pacing_rate_; }
  [[nodiscard]] double bandwidth() const noexcept { return max_bw_.get(); }
  [[nodiscard]] cc_clock::duration min_rtt() const noexcept { return min_rtt_; }
  [[nodiscard]] mode state() const noexcept { return mode_; }
  [[nodiscard]] std::uint64_t round() const noexcept { return round_; }
  [[nodiscard]] std::uint64_t delivered() const noexcept { return delivered_; }

 private:
  [[nodiscard]] std::uint64_t bdp(double gain) const noexcept;
  [[nodiscard]] std::uint64_t min_cwnd() const noexcept;
  [[nodiscard]] std::uint64_t probe_rtt_cwnd() const noexcept;
  void enter(mode m, cc_clock::time_point now) noexcept;
  void update_round(const sent_state& p) noexcept;
  void sample_rate(const sent_state& p, cc_clock::time_point now) noexcept;
  void check_full_pipe(cc_clock::duration rtt) noexcept;
  [[nodiscard]] bool queue_rising() const noexcept;
  void update_gain_cycle(cc_clock::time_point now, std::uint64_t in_flight) noexcept;
  void update_min_rtt(cc_clock::time_point now, cc_clock::duration rtt,
                      std::uint64_t in_flight) noexcept;
  void check_loss_ceiling() noexcept;
  void set_rate_and_window() noexcept;

  config cfg_;
  mode mode_ = mode::startup;
  windowed_max max_bw_;  // bytes per second
  cc_clock::duration min_rtt_{};
  cc_clock::time_point min_rtt_stamp_{};
  bool min_rtt_seen_ = false;
  double pacing_gain_ = 0, cwnd_gain_ = 0;
  double pacing_rate_ = 0;
  std::uint64_t cwnd_ = 0;

  // Delivery accounting, for rate samples and round counting.
  std::uint64_t delivered_ = 0;
  cc_clock::time_point delivered_time_{};
  cc_clock::time_point first_sent_time_{};
  std::uint64_t app_limited_until_ = 0;  // delivered count past which samples are the path's
  std::uint64_t round_ = 0, next_round_delivered_ = 0;
  bool round_start_ = false;
  cc_clock::time_point round_began_{};  // when the current round started, for its rate
  std::uint64_t round_began_delivered_ = 0;
  bool round_app_limited_ = false;

  // Startup ends when three rounds in a row raised the bandwidth by less than a quarter, or
  // when a round's smallest RTT rose clearly above the last round's: a queue is forming.
  cc_clock::duration round_min_rtt_{}, last_round_min_rtt_{};
  int round_samples_ = 0;
  bool conservative_ = false;  // Startup saw the queue and goes on at a lower gain
  double full_bw_ = 0;
  int full_bw_count_ = 0;
  bool filled_pipe_ = false;

  // ProbeBW's gain cycle.
  int cycle_index_ = 0;
  cc_clock::time_point cycle_stamp_{};
  bool lost_in_cycle_ = false;

  // ProbeRTT.
  cc_clock::time_point probe_rtt_done_{};
  bool probe_rtt_round_done_ = false;
  mode before_probe_rtt_ = mode::probe_bw;
  std::uint64_t prior_cwnd_ = 0;  // the window before ProbeRTT, given back after it

  // Loss per round, for the ceiling that keeps heavy congestion from being ignored.
  std::uint64_t round_lost_ = 0, round_acked_ = 0;
  std::uint64_t inflight_ceiling_ = 0;  // 0: none

  bool busy_seen_ = false;
  std::uint64_t busy_round_ = 0;  // the round of the last busy reply acted on
};

}  // namespace ferry::client
