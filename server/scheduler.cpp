#include "server/scheduler.hpp"

#include <algorithm>

namespace ferry::server {

namespace {
// While clients share the server, a turn is shorter, so that each is asked for its next GETs
// soon: a client with a congestion window then keeps its part of every turn filled.
constexpr std::size_t shared_turn = 16;
// Bytes of waiting GETs across all clients, paths included: a path may be 4096 bytes, so a
// count alone would let queues of long paths outgrow the server's memory budget.
constexpr std::size_t max_queued_bytes = 4u << 20;
}  // namespace

void scheduler::enqueue(client_state& c, std::uint64_t id, std::string rel, std::uint64_t offset,
                        std::uint32_t stride, std::uint32_t block, std::uint16_t count) {
  const auto cost = client_table::cost_of(rel);
  for (std::uint16_t i = 0; i < count; ++i) {
    if (c.queue.size() >= limits_.max_client_queue ||
        clients_.queued_bytes() + cost > max_queued_bytes) {
      // This client asks faster than it is served: its surplus is lost, as at a full router
      // queue. Nobody else waits for it.
      stats_.dropped_queue_full += count - i;
      break;
    }
    // The path is copied for all but the last, which takes it: a plain GET copies nothing.
    const bool last = i + 1 == count;
    clients_.push(c, pending_get{id + i, last ? std::move(rel) : rel,
                                 offset + std::uint64_t{i} * stride, block});
  }
  if (c.queue.empty() || c.ready) return;
  c.ready = true;
  ready_.push_back(c.key);
}

scheduler::turn_result scheduler::turn(std::uint64_t now, const serve_fn& serve,
                                       const may_serve_fn& may_serve) {
  // Each client waiting now, or served last turn (its next GETs may still be on the way), gets
  // an equal part of the turn. A client with less to ask leaves its part unused, and the turn
  // just ends sooner, so the next read comes sooner: a greedy client is held to its part even
  // while a normal client's queue is momentarily empty.
  const auto sharing = std::max<std::size_t>({ready_.size(), clients_last_turn_, 1});
  const auto quota = sharing == 1 ? per_turn : std::max<std::size_t>(4, shared_turn / sharing);
  ++turn_;
  turn_result result;
  std::size_t clients_served = 0, passes = 0;
  while (!ready_.empty() && result.served < per_turn && may_serve()) {
    if (!total_rate_.ready(now)) {
      result.wait_ms = total_rate_.wait_ms();
      result.rate_blocked = true;
      break;
    }
    const auto key = ready_.front();
    ready_.pop_front();
    auto* found = clients_.find(key);
    if (found == nullptr) continue;
    auto& c = *found;
    if (c.queue.empty()) {
      c.ready = false;
      continue;
    }
    ready_.push_back(key);
    if (c.turn != turn_) {
      c.turn = turn_;
      c.served_in_turn = 0;
    }
    const bool rate_ok = c.rate.ready(now);
    if (!rate_ok)
      result.wait_ms =
          result.wait_ms == 0 ? c.rate.wait_ms() : std::min(result.wait_ms, c.rate.wait_ms());
    if (!rate_ok || c.jobs >= limits_.max_client_jobs || c.served_in_turn >= quota) {
      // This client has had its part for now; the others go on. A full pass over every
      // waiting client that serves nobody ends the turn.
      if (++passes >= ready_.size()) break;
      continue;
    }
    passes = 0;
    if (c.served_in_turn == 0) ++clients_served;
    // The GETs at the front of its queue that ask for the blocks following each other, within
    // its part of the turn.
    const auto most = limits_.one_at_a_time
                          ? 1
                          : std::min({max_run, quota - c.served_in_turn, per_turn - result.served});
    std::size_t n = 1;
    while (n < most && n < c.queue.size()) {
      const auto& prev = c.queue[n - 1];
      const auto& g = c.queue[n];
      if (g.block != prev.block || g.offset != prev.offset + prev.block || g.rel != prev.rel) break;
      ++n;
    }
    pending_get run[max_run];
    for (std::size_t i = 0; i < n; ++i) run[i] = clients_.pop(c);
    c.served_in_turn += n;
    result.served += n;
    try {
      serve(c, {run, n});
    } catch (...) {
      ++stats_.internal_errors;
    }
  }
  clients_last_turn_ = clients_served;
  // Keep only clients that still wait.
  std::erase_if(ready_, [&](const peer_key& k) {
    auto* c = clients_.find(k);
    if (c != nullptr && !c->queue.empty()) return false;
    if (c != nullptr) c->ready = false;
    return true;
  });
  if (result.served == 0 && result.wait_ms > 0 && !ready_.empty()) result.rate_blocked = true;
  return result;
}

}  // namespace ferry::server
