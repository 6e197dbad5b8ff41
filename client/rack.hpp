#pragma once

// Loss detection by time, as RACK (RFC 8985): a request is lost once a request sent after it
// has been answered and a reordering window has passed on top of that reply's round trip. A
// reply overtaken by a later one is therefore not lost at once, as it would be by a count of
// later replies; and when an answer does come for a request already declared lost, the
// network reordered, so the window grows.

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace ferry::client {

class rack {
 public:
  using clock = std::chrono::steady_clock;

  // A reply came for the request sent `seq`-th on this source, whose round trip was `rtt`.
  void on_ack(std::uint64_t seq, clock::duration rtt) noexcept {
    if (!seen_ || seq >= newest_seq_) {
      newest_seq_ = seq;
      rtt_ = rtt;
      seen_ = true;
    }
  }

  // An answer came, in round trip `round`, for a request already declared lost: reordering,
  // not loss. The window grows once a round at most, however many answers show it, and starts
  // again from one quarter after `decay_rounds` without any (RFC 8985, 6.2, counts recoveries).
  void on_spurious(std::uint64_t round) noexcept {
    if (spurious_seen_ && round == last_spurious_) return;
    if (!spurious_seen_ || round - last_spurious_ >= decay_rounds) mult_ = 1;
    mult_ = std::min(mult_ + 1, max_mult);
    last_spurious_ = round;
    spurious_seen_ = true;
  }

  // The reordering window in round trip `round`: a quarter of the min RTT, times how often
  // reordering was seen lately, but never more than the smoothed RTT (RFC 8985, 6.2).
  [[nodiscard]] clock::duration window(clock::duration min_rtt, clock::duration srtt,
                                       std::uint64_t round) const noexcept {
    return std::min<clock::duration>(multiplier(round) * min_rtt / 4, srtt);
  }

  // Whether the request sent `seq`-th, at `sent`, is lost by now. Requests are checked oldest
  // first: once one is not, none sent after it is either.
  [[nodiscard]] bool lost(std::uint64_t seq, clock::time_point sent, clock::time_point now,
                          clock::duration window) const noexcept {
    return seen_ && seq < newest_seq_ && now - sent >= rtt_ + window;
  }

  void reset() noexcept { *this = rack{}; }
  [[nodiscard]] int multiplier(std::uint64_t round) const noexcept {
    return spurious_seen_ && round - last_spurious_ < decay_rounds ? mult_ : 1;
  }

  static constexpr int max_mult = 16;
  static constexpr std::uint64_t decay_rounds = 16;

 private:
  bool seen_ = false;
  std::uint64_t newest_seq_ = 0;  // the latest-sent request answered
  clock::duration rtt_{};         // its round trip
  int mult_ = 1;
  bool spurious_seen_ = false;
  std::uint64_t last_spurious_ = 0;  // the round of the last answer to a request declared lost
};

}  // namespace ferry::client
