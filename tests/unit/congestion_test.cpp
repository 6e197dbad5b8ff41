// Unit tests for the client's congestion control and loss detection, with no socket: a small
// event simulation plays the path (a bottleneck of a given rate and queue, a fixed delay each
// way, random loss each way) and drives the controller exactly as the fetcher does, one GET and
// one reply at a time, so each case checks what the model makes of a scripted path.

#include "client/congestion.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <vector>

#include <fmt/core.h>

#include "client/rack.hpp"

namespace {

using ferry::client::cc_clock;
using ferry::client::congestion;
using ferry::client::rack;
using ferry::client::sent_state;
using ferry::client::windowed_max;
using namespace std::chrono_literals;

struct path {
  double rate = 12.5e6;  // bytes per second at the bottleneck
  cc_clock::duration one_way = 30ms;
  std::uint64_t queue = 0;  // bytes the bottleneck holds; 0: one bandwidth-delay product
  double loss_up = 0, loss_down = 0;
};

// One client's transfer through the shared bottleneck: pacing, the window, RACK-style loss by
// order (the simulated path never reorders) and a timeout for the tail, as in client/fetch.cpp.
struct flow {
  flow(const congestion::config& c, cc_clock::time_point t0) : cc{c, t0}, segment{c.segment} {}
  congestion cc;
  std::uint32_t segment;
  std::map<std::uint64_t, sent_state> in_flight;  // by send order
  std::uint64_t in_flight_bytes = 0, next_seq = 0, lost = 0, sent = 0, max_in_flight = 0;
  cc_clock::time_point next_send{};
  std::vector<std::pair<cc_clock::time_point, std::uint64_t>> deliveries;  // time, bytes
  std::vector<cc_clock::time_point> losses;  // when each loss was detected

  [[nodiscard]] std::size_t lost_after(cc_clock::time_point t) const {
    return static_cast<std::size_t>(
        std::count_if(losses.begin(), losses.end(), [&](auto l) { return l >= t; }));
  }

  [[nodiscard]] double goodput(cc_clock::time_point from, cc_clock::time_point to) const {
    std::uint64_t bytes = 0;
    for (auto& [t, b] : deliveries)
      if (t >= from && t < to) bytes += b;
    return static_cast<double>(bytes) / std::chrono::duration<double>(to - from).count();
  }
};

class simulation {
 public:
  explicit simulation(path p, std::uint64_t seed = 7) : path_{p}, rng_{seed} {
    if (path_.queue == 0)
      path_.queue = static_cast<std::uint64_t>(
          path_.rate * 2 * std::chrono::duration<double>(path_.one_way).count());
  }

  flow& add_flow(congestion::config c = {}, cc_clock::duration start = {}) {
    c.initial_rtt = 2 * path_.one_way;
    flows_.push_back(std::make_unique<flow>(c, t0_ + start));
    starts_.push_back(t0_ + start);
    return *flows_.back();
  }

  void run(cc_clock::duration length) {
    for (std::size_t i = 0; i < flows_.size(); ++i) push({starts_[i], kind::tick, i, 0});
    const auto end = t0_ + length;
    while (!events_.empty() && events_.top().at < end) {
      const auto e = events_.top();
      events_.pop();
      auto& f = *flows_[e.flow];
      if (e.what == kind::request) serve(e);
      if (e.what == kind::reply) on_reply(f, e.at, e.seq);
      if (e.what == kind::tick) {
        on_tick(f, e.at);
        if (trace_ && (e.at - t0_) % 250ms < 1ms) trace(f, e.flow, e.at);
        push({e.at + 1ms, kind::tick, e.flow, 0});
      }
      if (e.what != kind::request) pump(f, e.flow, e.at);
    }
  }

  [[nodiscard]] cc_clock::time_point at(cc_clock::duration d) const { return t0_ + d; }
  [[nodiscard]] double rtt_seconds() const {
    return 2 * std::chrono::duration<double>(path_.one_way).count();
  }
  [[nodiscard]] const path& link() const { return path_; }

 private:
  enum class kind { request, reply, tick };
  struct event {
    cc_clock::time_point at;
    kind what;
    std::size_t flow;
    std::uint64_t seq;
    std::uint64_t order = 0;  // events at one instant keep the order they were made in
    bool operator>(const event& o) const { return at != o.at ? at > o.at : order > o.order; }
  };

  void push(event e) {
    e.order = made_++;
    events_.push(e);
  }

  // FERRY_SIM_TRACE=1 prints each flow's model four times a simulated second, to see why a
  // case fails.
  void trace(const flow& f, std::size_t index, cc_clock::time_point now) const {
    fmt::print(stderr,
               "t={:.2f} flow={} mode={} bw={:.2f}MB/s min_rtt={:.1f}ms cwnd={} in_flight={} "
               "pacing={:.2f}MB/s lost={} sent={}\n",
               std::chrono::duration<double>(now - t0_).count(), index,
               static_cast<int>(f.cc.state()), f.cc.bandwidth() / 1e6,
               std::chrono::duration<double, std::milli>(f.cc.min_rtt()).count(), f.cc.cwnd(),
               f.in_flight_bytes, f.cc.pacing_rate() / 1e6, f.lost, f.sent);
  }

  bool chance(double p) { return p > 0 && std::uniform_real_distribution<>{0, 1}(rng_) < p; }

  void pump(flow& f, std::size_t index, cc_clock::time_point now) {
    constexpr auto quantum = 1ms;
    while (f.in_flight_bytes < f.cc.cwnd() && f.next_send <= now + quantum) {
      const auto p = f.cc.on_send(f.segment, f.in_flight_bytes, now);
      const auto seq = f.next_seq++;
      f.in_flight.emplace(seq, p);
      f.in_flight_bytes += f.segment;
      f.max_in_flight = std::max(f.max_in_flight, f.in_flight_bytes);
      ++f.sent;
      const auto gap = std::chrono::duration_cast<cc_clock::duration>(
          std::chrono::duration<double>(f.segment / f.cc.pacing_rate()));
      f.next_send = std::max(f.next_send, now - quantum) + gap;
      if (!chance(path_.loss_up)) push({now + path_.one_way, kind::request, index, seq});
    }
  }

  // The server answers at once; the reply waits its turn at the bottleneck, or is dropped
  // when the queue is full.
  void serve(const event& e) {
    const auto& f = *flows_[e.flow];
    const auto start = std::max(e.at, link_free_);
    const double backlog = std::chrono::duration<double>(start - e.at).count() * path_.rate;
    if (backlog + f.segment > static_cast<double>(path_.queue)) return;
    link_free_ = start + std::chrono::duration_cast<cc_clock::duration>(
                             std::chrono::duration<double>(f.segment / path_.rate));
    if (!chance(path_.loss_down)) push({link_free_ + path_.one_way, kind::reply, e.flow, e.seq});
  }

  void on_reply(flow& f, cc_clock::time_point now, std::uint64_t seq) {
    const auto it = f.in_flight.find(seq);
    if (it == f.in_flight.end()) return;  // declared lost already
    const auto p = it->second;
    f.in_flight.erase(it);
    f.in_flight_bytes -= p.bytes;
    f.cc.on_ack(p, now, now - p.sent, f.in_flight_bytes);
    f.deliveries.emplace_back(now, p.bytes);
    // The path keeps order, so everything sent before this one and still out is lost.
    while (!f.in_flight.empty() && f.in_flight.begin()->first < seq)
      lose(f, f.in_flight.begin(), now);
  }

  void on_tick(flow& f, cc_clock::time_point now) {
    // The tail: a request unanswered for three path RTTs is lost.
    while (!f.in_flight.empty() && now - f.in_flight.begin()->second.sent > 6 * path_.one_way)
      lose(f, f.in_flight.begin(), now);
  }

  void lose(flow& f, std::map<std::uint64_t, sent_state>::iterator it, cc_clock::time_point now) {
    f.in_flight_bytes -= it->second.bytes;
    f.cc.on_loss(it->second, now);
    f.losses.push_back(now);
    ++f.lost;
    f.in_flight.erase(it);
  }

  path path_;
  std::mt19937_64 rng_;
  cc_clock::time_point t0_{std::chrono::seconds{1000}};
  cc_clock::time_point link_free_{};
  std::vector<std::unique_ptr<flow>> flows_;
  std::vector<cc_clock::time_point> starts_;
  std::priority_queue<event, std::vector<event>, std::greater<>> events_;
  std::uint64_t made_ = 0;
  bool trace_ = std::getenv("FERRY_SIM_TRACE") != nullptr;
};

}  // namespace

TEST_CASE("windowed_max keeps the largest sample of the window, and lets it expire") {
  windowed_max m;
  m.reset(0, 10);
  m.update(1, 5, 10);
  CHECK(m.get() == 10);
  m.update(2, 20, 10);
  CHECK(m.get() == 20);
  m.update(5, 8, 10);
  m.update(9, 7, 10);
  CHECK(m.get() == 20);
  m.update(13, 6, 10);  // 20 is eleven rounds old: the best of the rest takes over
  CHECK(m.get() == 8);
  m.update(40, 3, 10);  // nothing left in the window
  CHECK(m.get() == 3);
}

TEST_CASE("a clean long path: Startup finds the rate, and the flow then runs at it") {
  simulation sim{{.rate = 12.5e6, .one_way = 30ms}};
  auto& f = sim.add_flow();
  sim.run(10s);
  const double rate = sim.link().rate;
  CHECK(f.cc.state() == congestion::mode::probe_bw);
  CHECK(f.cc.bandwidth() == doctest::Approx(rate).epsilon(0.1));
  CHECK(f.cc.min_rtt() >= 60ms);
  CHECK(f.cc.min_rtt() < 62ms);
  // Past the ramp, at the link's rate; and on a path that loses nothing but what overflows its
  // queue, the ramp's overshoot is small (Startup slows at a rising RTT) and then nothing is
  // lost at all: the model does not overestimate the rate.
  CHECK(f.goodput(sim.at(2s), sim.at(10s)) >= 0.95 * rate);
  CHECK(f.lost <= f.sent / 50);
  CHECK(f.lost_after(sim.at(2s)) == 0);
  // The window stays near the model's one and a half bandwidth-delay products.
  CHECK(static_cast<double>(f.max_in_flight) <= 3.5 * rate * sim.rtt_seconds());
}

TEST_CASE("random loss is not congestion: 2% and 5% each way still run near the link rate") {
  for (const double loss : {0.02, 0.05}) {
    CAPTURE(loss);
    simulation sim{{.rate = 12.5e6, .one_way = 30ms, .loss_up = loss, .loss_down = loss}};
    auto& f = sim.add_flow();
    sim.run(12s);
    // What survives both ways is the most a flow can have: 90% or 96% of the link.
    const double ceiling = sim.link().rate * (1 - loss) * (1 - loss);
    CHECK(f.goodput(sim.at(3s), sim.at(12s)) >= 0.85 * ceiling);
    CHECK(f.cc.bandwidth() >= 0.85 * sim.link().rate);
  }
}

TEST_CASE("a window of 64 MiB and more: 1 Gbit/s at 500 ms runs at its rate") {
  simulation sim{{.rate = 125e6, .one_way = 250ms}};
  congestion::config c;
  c.segment = 65024;
  auto& f = sim.add_flow(c);
  sim.run(15s);
  CHECK(f.max_in_flight >= 64ull << 20);
  CHECK(f.goodput(sim.at(8s), sim.at(15s)) >= 0.9 * sim.link().rate);
}

TEST_CASE("a configured cap on the window holds what is in flight, and so the rate") {
  simulation sim{{.rate = 125e6, .one_way = 250ms}};
  congestion::config c;
  c.segment = 65024;
  c.max_cwnd = 8ull << 20;
  auto& f = sim.add_flow(c);
  sim.run(10s);
  CHECK(f.max_in_flight <= c.max_cwnd + c.segment);
  // One window a round trip: 8 MiB every 500 ms.
  CHECK(f.goodput(sim.at(4s), sim.at(10s)) ==
        doctest::Approx(static_cast<double>(c.max_cwnd) / 0.5).epsilon(0.1));
}

TEST_CASE("two flows through one bottleneck share it") {
  simulation sim{{.rate = 12.5e6, .one_way = 20ms}};
  congestion::config a, b;
  a.seed = 1;
  b.seed = 4;
  auto& f1 = sim.add_flow(a);
  auto& f2 = sim.add_flow(b, 2s);  // the second comes in when the first has the link
  sim.run(30s);
  const double g1 = f1.goodput(sim.at(15s), sim.at(30s));
  const double g2 = f2.goodput(sim.at(15s), sim.at(30s));
  CAPTURE(g1);
  CAPTURE(g2);
  CHECK(g1 + g2 >= 0.9 * sim.link().rate);
  CHECK(std::min(g1, g2) / (g1 + g2) >= 0.35);
}

TEST_CASE("heavy loss at a small queue caps what is in flight") {
  // A queue of a tenth of the bandwidth-delay product: the window, not the rate, overflows it.
  simulation sim{{.rate = 12.5e6, .one_way = 30ms, .queue = 75'000}};
  auto& f = sim.add_flow();
  sim.run(10s);
  CHECK(f.goodput(sim.at(3s), sim.at(10s)) >= 0.85 * sim.link().rate);
  CHECK(f.lost <= f.sent / 20);
}

TEST_CASE("a timeout shrinks the window to a few segments until a reply comes") {
  const auto t0 = cc_clock::time_point{} + 100s;
  congestion::config c;
  c.segment = 1000;
  congestion cc{c, t0};
  CHECK(cc.cwnd() == 32'000);
  cc.on_timeout();
  CHECK(cc.cwnd() == 4000);
  // It grows again with the replies, a block each, not back to where it was at once.
  const auto p = cc.on_send(1000, 0, t0);
  cc.on_ack(p, t0 + 50ms, 50ms, 0);
  CHECK(cc.cwnd() == 5000);
}

TEST_CASE("busy replies cap what is in flight and the rate, once a round trip") {
  const auto t0 = cc_clock::time_point{} + 100s;
  congestion::config c;
  c.segment = 1000;
  congestion cc{c, t0};
  const double rate = cc.pacing_rate();
  cc.on_busy(20'000, t0);
  CHECK(cc.cwnd() == 17'000);
  CHECK(cc.pacing_rate() == doctest::Approx(0.85 * rate));
  cc.on_busy(20'000, t0);  // the same round: no further cut
  CHECK(cc.cwnd() == 17'000);
  CHECK(cc.pacing_rate() == doctest::Approx(0.85 * rate));
}

TEST_CASE("RACK: an answer overtaken by a later one is lost only after the reordering window") {
  rack r;
  const auto t0 = rack::clock::time_point{} + 100s;
  const auto min_rtt = 40ms, srtt = 40ms;
  CHECK_FALSE(r.lost(0, t0, t0 + 1s, r.window(min_rtt, srtt, 0)));  // nothing answered yet
  r.on_ack(5, 40ms);  // the sixth request came back after 40 ms
  const auto w = r.window(min_rtt, srtt, 0);
  CHECK(w == 10ms);
  CHECK_FALSE(r.lost(5, t0, t0 + 1s, w));          // not sent before the one answered
  CHECK_FALSE(r.lost(2, t0, t0 + 40ms + 9ms, w));  // may still be on its way
  CHECK(r.lost(2, t0, t0 + 40ms + 10ms, w));       // overdue
  r.on_ack(3, 80ms);                               // an older request: no newer evidence
  CHECK(r.lost(2, t0, t0 + 50ms, r.window(min_rtt, srtt, 0)));
}

TEST_CASE("RACK: reordering widens the window once a round, up to the smoothed RTT, and fades") {
  rack r;
  r.on_ack(1, 40ms);
  for (int i = 0; i < 10; ++i) r.on_spurious(7);  // many answers in one round count once
  CHECK(r.window(40ms, 100ms, 7) == 20ms);
  for (std::uint64_t round = 8; round < 11; ++round) r.on_spurious(round);
  CHECK(r.window(40ms, 100ms, 10) == 50ms);
  for (std::uint64_t round = 11; round < 60; ++round) r.on_spurious(round);
  CHECK(r.multiplier(59) == rack::max_mult);
  CHECK(r.window(40ms, 100ms, 59) == 100ms);
  // Sixteen rounds with no reordering: back to a quarter of the min RTT.
  CHECK(r.window(40ms, 100ms, 59 + rack::decay_rounds) == 10ms);
  r.on_spurious(59 + 2 * rack::decay_rounds);
  CHECK(r.window(40ms, 100ms, 59 + 2 * rack::decay_rounds) == 20ms);
}
