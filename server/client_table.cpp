#include "server/client_table.hpp"

#include <iterator>

namespace ferry::server {

namespace {
// Client entries older than this do not count as active.
constexpr std::uint64_t client_active_ms = 60'000;
// A client with nothing queued or running is forgotten after this long, keeping only when it
// was last heard from: every run of a command-line client comes from a new port, and their
// queues and buckets must not pile up.
constexpr std::uint64_t client_idle_ms = 2'000;

// The network a client address belongs to, for limits::max_per_prefix: family and the first
// 3 bytes of an IPv4 address (/24) or 7 of an IPv6 one (/56).
std::uint64_t prefix_of(const address_key& k) noexcept {
  const auto byte = [&](std::size_t i) { return std::to_integer<std::uint64_t>(k[i]); };
  if (byte(0) == 4) return 4ULL << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
  // An IPv4 client of a server bound to "::" arrives as ::ffff:a.b.c.d: its /24 is its network.
  bool mapped = byte(11) == 0xff && byte(12) == 0xff;
  for (std::size_t i = 1; i <= 10 && mapped; ++i) mapped = byte(i) == 0;
  if (mapped) return 4ULL << 24 | byte(13) << 16 | byte(14) << 8 | byte(15);
  std::uint64_t p = 6;
  for (std::size_t i = 1; i <= 7; ++i) p = p << 8 | byte(i);
  return p;
}
}  // namespace

peer_key peer_key::of(const sockaddr* from) noexcept {
  peer_key key;
  (void)address_key_of(from, key.bytes);
  return key;
}

std::size_t peer_key_hash::operator()(const peer_key& k) const noexcept {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (auto b : k.bytes) h = (h ^ std::to_integer<std::uint64_t>(b)) * 1099511628211ULL;
  return static_cast<std::size_t>(h);
}

client_state* client_table::find(const peer_key& key) noexcept {
  auto it = clients_.find(key);
  return it == clients_.end() ? nullptr : &it->second;
}

client_state* client_table::client_for(const endpoint& peer, std::uint64_t now) noexcept {
  const auto key = peer_key::of(peer.addr());
  if (auto it = clients_.find(key); it != clients_.end()) {
    by_recency_.splice(by_recency_.begin(), by_recency_, it->second.recency);
    return &it->second;
  }
  try {
    const auto prefix = prefix_of(key.bytes);
    if (auto p = per_prefix_.find(prefix);
        p != per_prefix_.end() && p->second >= limits_.max_per_prefix) {
      ++stats_.prefix_full;
      return nullptr;
    }
    // Full: the client heard from least recently makes room, so a new one is always served;
    // its token keeps no state, so it is served again when it comes back.
    while (clients_.size() >= limits_.max_clients && !by_recency_.empty()) {
      if (auto victim = clients_.find(by_recency_.back()); victim != clients_.end()) {
        forget(victim);
        ++stats_.clients_evicted;
      } else {
        by_recency_.pop_back();  // cannot happen; never spin on it
      }
    }
    // The three structures change together or not at all, should memory run out.
    by_recency_.push_front(key);
    try {
      ++per_prefix_[prefix];
    } catch (...) {
      by_recency_.pop_front();
      throw;
    }
    try {
      auto& c = clients_[key];
      c.peer = peer;
      c.key = key;
      c.rate = token_bucket{limits_.client_rate, now};
      c.recency = by_recency_.begin();
      return &c;
    } catch (...) {
      by_recency_.pop_front();
      if (auto p = per_prefix_.find(prefix); p != per_prefix_.end() && --p->second == 0)
        per_prefix_.erase(p);
      throw;
    }
  } catch (...) {
    return nullptr;
  }
}

void client_table::push(client_state& c, pending_get g) {
  const auto cost = cost_of(g.rel);
  c.queue.push_back(std::move(g));
  ++queued_;
  queued_bytes_ += cost;
}

pending_get client_table::pop(client_state& c) noexcept {
  pending_get g = std::move(c.queue.front());
  c.queue.pop_front();
  --queued_;
  queued_bytes_ -= cost_of(g.rel);
  return g;
}

void client_table::forget(map::iterator it) noexcept {
  auto& c = it->second;
  for (const auto& g : c.queue) queued_bytes_ -= cost_of(g.rel);
  queued_ -= c.queue.size();
  by_recency_.erase(c.recency);
  if (auto p = per_prefix_.find(prefix_of(c.key.bytes)); p != per_prefix_.end() && --p->second == 0)
    per_prefix_.erase(p);
  // Its key may still wait in the scheduler's round or name a pool job: both look it up and
  // find nothing.
  clients_.erase(it);
}

void client_table::prune(std::uint64_t now) noexcept {
  try {
    std::erase_if(seen_, [&](const auto& s) { return now - s.second > client_active_ms; });
    for (auto it = clients_.begin(); it != clients_.end();) {
      const auto& c = it->second;
      if (!c.queue.empty() || c.jobs != 0 || c.ready || now - c.last_seen_ms <= client_idle_ms) {
        ++it;
        continue;
      }
      if (seen_.size() < limits_.max_clients) seen_[it->first] = c.last_seen_ms;
      forget(it++);
    }
  } catch (...) {
    seen_.clear();
  }
}

std::size_t client_table::active(std::uint64_t now) noexcept {
  prune(now);
  std::size_t n = 0;
  for (const auto& [key, c] : clients_) n += now - c.last_seen_ms <= client_active_ms ? 1 : 0;
  for (const auto& [key, last] : seen_) n += clients_.contains(key) ? 0 : 1;
  return n;
}

void client_table::clear() noexcept {
  clients_.clear();
  by_recency_.clear();
  per_prefix_.clear();
  queued_ = 0;
  queued_bytes_ = 0;
}

}  // namespace ferry::server
