// Unit tests for the server's request scheduler and client table, without a socket: fair
// turns across clients, runs of consecutive blocks, the bounds on queues and jobs, the rate
// limits, and the table's per-network cap and eviction.

#include "server/scheduler.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/endpoints.hpp"

namespace {

using namespace ferry;
using namespace ferry::server;

using test::v4;

// A run the scheduler handed out: whose, and which blocks.
struct served_run {
  std::uint16_t port;
  std::string rel;
  std::vector<std::uint64_t> offsets;
};

struct harness {
  stats counters;
  shared_token_bucket total{0, 0};
  client_table clients;
  scheduler sched;
  std::vector<served_run> runs;

  explicit harness(scheduler::limits l = {}, client_table::limits t = {})
      : clients{t, counters}, sched{clients, total, l, counters} {}

  client_state& client(std::uint16_t port, std::uint32_t addr = 0x7f000001) {
    auto* c = clients.client_for(v4(addr, port), 0);
    REQUIRE(c != nullptr);
    return *c;
  }
  // Queues `count` GETs of 1000-byte blocks of `rel` from block `first`.
  void ask(client_state& c, std::uint16_t count, std::uint64_t first = 0,
           const std::string& rel = "f") {
    sched.enqueue(c, 1, rel, first * 1000, 1000, 1000, count);
  }
  scheduler::turn_result turn(std::uint64_t now = 0) {
    return sched.turn(
        now,
        [&](client_state& c, std::span<pending_get> run) {
          served_run r{c.peer.port(), run[0].rel, {}};
          for (const auto& g : run) r.offsets.push_back(g.offset);
          runs.push_back(r);
        },
        [] { return true; });
  }
  std::size_t served_to(std::uint16_t port) const {
    std::size_t n = 0;
    for (const auto& r : runs) n += r.port == port ? r.offsets.size() : 0;
    return n;
  }
};

}  // namespace

TEST_CASE("a lone client is served its consecutive blocks in runs, a turn at a time") {
  harness h;
  auto& c = h.client(1000);
  h.ask(c, 100);
  CHECK(h.clients.queued() == 100);
  const auto first = h.turn();
  CHECK(first.served == scheduler::per_turn);
  REQUIRE(h.runs.size() == 2);  // runs of max_run blocks
  CHECK(h.runs[0].offsets.size() == scheduler::max_run);
  CHECK(h.runs[0].offsets.front() == 0);
  CHECK(h.runs[1].offsets.front() == scheduler::max_run * 1000);
  CHECK(h.sched.waiting());
  const auto second = h.turn();
  CHECK(second.served == 100 - scheduler::per_turn);
  CHECK_FALSE(h.sched.waiting());
  CHECK(h.clients.queued() == 0);
  CHECK(h.clients.queued_bytes() == 0);
  CHECK_FALSE(c.ready);
}

TEST_CASE("a run ends where the blocks stop following each other") {
  harness h;
  auto& c = h.client(1000);
  h.ask(c, 3, 0);
  h.ask(c, 2, 10);           // a gap
  h.ask(c, 2, 12, "other");  // another file
  (void)h.turn();
  REQUIRE(h.runs.size() == 3);
  CHECK(h.runs[0].offsets == std::vector<std::uint64_t>{0, 1000, 2000});
  CHECK(h.runs[1].offsets == std::vector<std::uint64_t>{10'000, 11'000});
  CHECK(h.runs[2].rel == "other");
}

TEST_CASE("clients share a turn equally, whatever each asks for") {
  harness h;
  auto& greedy = h.client(1000);
  auto& modest = h.client(2000);
  h.ask(greedy, 200);
  h.ask(modest, 8);
  (void)h.turn();
  // Two clients: each may take shared_turn / 2 = 8 in the turn.
  CHECK(h.served_to(2000) == 8);
  CHECK(h.served_to(1000) == 8);
  // The modest client is done; the greedy one keeps its part, not the whole turn, while the
  // other was served last turn (its next GETs may be on the way).
  h.runs.clear();
  (void)h.turn();
  CHECK(h.served_to(1000) == 8);
  h.runs.clear();
  (void)h.turn();
  CHECK(h.served_to(1000) == scheduler::per_turn);
}

TEST_CASE("a client's queue is bounded; the surplus is dropped and counted") {
  harness h{{.max_client_queue = 10}};
  auto& c = h.client(1000);
  h.ask(c, 25);
  CHECK(c.queue.size() == 10);
  CHECK(h.counters.dropped_queue_full == 15);
  auto& other = h.client(2000);
  h.ask(other, 5);
  CHECK(other.queue.size() == 5);  // one client's flood does not fill another's queue
}

TEST_CASE("a client at its job cap waits while the others are served") {
  harness h{{.max_client_jobs = 2}};
  auto& busy = h.client(1000);
  auto& idle = h.client(2000);
  busy.jobs = 2;
  h.ask(busy, 4);
  h.ask(idle, 4);
  const auto r = h.turn();
  CHECK(r.served == 4);
  CHECK(h.served_to(1000) == 0);
  CHECK(h.served_to(2000) == 4);
  CHECK(h.sched.waiting());  // busy still waits for its jobs
  busy.jobs = 0;
  h.runs.clear();
  (void)h.turn();
  CHECK(h.served_to(1000) == 4);
}

TEST_CASE("a rate limit serves one block at a time and says how long to wait") {
  harness h{{.one_at_a_time = true}, {.client_rate = 100'000}};
  auto& c = h.client(1000);
  h.ask(c, 2000);
  const auto r = h.turn(0);
  // The bucket holds a burst of 4 x 64 KiB; each block charges nothing here (the server
  // charges what it sends), so the turn is bounded by per_turn, in runs of one.
  CHECK(r.served == scheduler::per_turn);
  CHECK(h.runs.size() == scheduler::per_turn);
  c.rate.charge(1'000'000);  // ten seconds' worth
  h.runs.clear();
  const auto blocked = h.turn(0);
  CHECK(blocked.served == 0);
  CHECK(blocked.rate_blocked);
  CHECK(blocked.wait_ms > 1000);
}

TEST_CASE("serving stops when the server may not send") {
  harness h;
  auto& c = h.client(1000);
  h.ask(c, 10);
  const auto r = h.sched.turn(
      0, [](client_state&, std::span<pending_get>) {}, [] { return false; });
  CHECK(r.served == 0);
  CHECK(h.clients.queued() == 10);
}

TEST_CASE("a forgotten client's GETs leave the queues and the count") {
  harness h;
  auto& c = h.client(1000);
  h.ask(c, 10);
  c.last_seen_ms = 0;
  h.clients.prune(1'000'000);  // it still has GETs queued: kept
  CHECK(h.clients.size() == 1);
  (void)h.turn();
  h.clients.prune(1'000'000);  // idle and quiet for long: forgotten
  CHECK(h.clients.size() == 0);
  CHECK(h.clients.active(1'000'000) == 0);  // heard from too long ago to count as active
}

TEST_CASE("the client table caps a network and makes room by recency") {
  harness h{{}, {.max_clients = 4, .max_per_prefix = 3}};
  for (std::uint16_t p = 1; p <= 3; ++p) (void)h.client(p, 0x0a000001);  // 10.0.0.1
  // A fourth address of 10.0.0.0/24 is refused; another network is not.
  CHECK(h.clients.client_for(v4(0x0a0000fe, 9), 0) == nullptr);
  CHECK(h.counters.prefix_full == 1);
  (void)h.client(1, 0x0b000001);  // 11.0.0.1: the table is now full
  // Port 2 is heard from again, so port 1 is the least recent and makes room.
  (void)h.client(2, 0x0a000001);
  auto* newcomer = h.clients.client_for(v4(0x0c000001, 1), 0);
  REQUIRE(newcomer != nullptr);
  CHECK(h.counters.clients_evicted == 1);
  CHECK(h.clients.size() == 4);
  CHECK(h.clients.find(peer_key::of(v4(0x0a000001, 1).addr())) == nullptr);
  CHECK(h.clients.find(peer_key::of(v4(0x0a000001, 2).addr())) != nullptr);
}
