#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>

#include "server/client_table.hpp"
#include "server/rate_limit.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Decides which waiting GETs are served, in turns of the loop: GETs wait in one queue per
// client and are served round-robin in runs of consecutive blocks, so that a client that asks
// for more than its share only lengthens its own queue. It serves nothing itself: each turn
// hands runs to a function of the server's. Loop thread only; needs no socket.
class scheduler {
 public:
  struct limits {
    std::size_t max_client_queue = 256;  // GETs waiting per client; beyond: dropped
    std::size_t max_client_jobs = 32;    // a client with this many pool jobs waits its turn
    bool one_at_a_time = false;          // runs of one GET, so that no run overshoots a rate
  };
  // What a turn did: GETs served, and whether a rate limit stopped it, with the milliseconds
  // until that limit lets more go.
  struct turn_result {
    std::size_t served = 0;
    std::uint64_t wait_ms = 0;
    bool rate_blocked = false;
  };
  // Serves a run of GETs of one client, for consecutive blocks of one file; it may move from
  // them. Throwing loses the run, counted as an internal error.
  using serve_fn = std::function<void(client_state&, std::span<pending_get>)>;
  // Whether serving may go on; false ends the turn (replies wait for the socket).
  using may_serve_fn = std::function<bool()>;

  // GETs served in one turn at most, and in one run.
  static constexpr std::size_t per_turn = 64;
  static constexpr std::size_t max_run = 32;

  scheduler(client_table& clients, shared_token_bucket& total_rate, limits l,
            stats& counters) noexcept
      : clients_{clients}, total_rate_{total_rate}, limits_{l}, stats_{counters} {}

  // Queues the `count` GETs of one request, for blocks of `stride` bytes from `offset`, each
  // served as at most `block` bytes. What does not fit the client's queue or the server's
  // budget is dropped and counted: the client's congestion control slows it down.
  void enqueue(client_state& c, std::uint64_t id, std::string rel, std::uint64_t offset,
               std::uint32_t stride, std::uint32_t block, std::uint16_t count);
  // True while some client has GETs waiting.
  [[nodiscard]] bool waiting() const noexcept { return !ready_.empty(); }
  // Serves one turn at time `now`.
  turn_result turn(std::uint64_t now, const serve_fn& serve, const may_serve_fn& may_serve);
  void clear() noexcept { ready_.clear(); }

 private:
  client_table& clients_;            // unowned
  shared_token_bucket& total_rate_;  // unowned
  limits limits_;
  stats& stats_;                // unowned
  std::deque<peer_key> ready_;  // clients with queued GETs, in round-robin order
  std::uint64_t turn_ = 0;
  std::size_t clients_last_turn_ = 0;
};

}  // namespace ferry::server
