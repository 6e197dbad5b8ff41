#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <string>
#include <unordered_map>

#include "common/address.hpp"
#include "server/rate_limit.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Identifies a client by its address and port.
struct peer_key {
  address_key bytes{};  // family, address and port
  friend bool operator==(const peer_key&, const peer_key&) = default;
  static peer_key of(const sockaddr* sa) noexcept;
};
struct peer_key_hash {
  std::size_t operator()(const peer_key& k) const noexcept;
};

// A GET waiting to be served: one block of one file.
struct pending_get {
  std::uint64_t id = 0;
  std::string rel;  // already normalized
  std::uint64_t offset = 0;
  std::uint32_t block = 0;
};

// What the server keeps about a validated client address: nothing about any transfer, only
// the GETs it has not yet served and what limits that client's share.
struct client_state {
  endpoint peer;
  peer_key key;
  std::deque<pending_get> queue;
  token_bucket rate;
  std::size_t jobs = 0;  // pool jobs in flight for it
  std::uint64_t last_seen_ms = 0;
  std::uint64_t turn = 0;                 // the last turn it was considered in
  std::size_t served_in_turn = 0;         // GETs served to it in that turn
  bool ready = false;                     // waiting in the scheduler's round
  bool gso = true;                        // false once the kernel refused UDP GSO towards it
  std::uint64_t token_sent_ms = 0;        // when it was last handed a fresh address token
  std::uint64_t payload_sent = 0;         // block bytes answered on the loop, for the access log
  std::list<peer_key>::iterator recency;  // its place in the table's order of recency
};

// The validated client addresses a server knows, and the GETs they have waiting. Bounded: at
// most max_clients, of which at most max_per_prefix share a /24 (IPv4) or a /56 (IPv6), so one
// host or network cannot fill it to shut others out. When full, the client heard from least
// recently makes room. Loop thread only.
class client_table {
 public:
  struct limits {
    std::size_t max_clients = 65'536;
    std::size_t max_per_prefix = 4'096;
    std::uint64_t client_rate = 0;  // bytes per second to one client; 0: no limit
  };
  client_table(limits l, stats& counters) noexcept : limits_{l}, stats_{counters} {}

  // The entry of `peer`, made if it is new and marked as the most recently heard from. Null if
  // its prefix is full, or memory ran out.
  [[nodiscard]] client_state* client_for(const endpoint& peer, std::uint64_t now) noexcept;
  [[nodiscard]] client_state* find(const peer_key& key) noexcept;

  // Queues a GET behind the client's others, counted in queued_bytes() by cost_of().
  void push(client_state& c, pending_get g);
  // Takes the GET at the front of the client's queue, which must not be empty.
  [[nodiscard]] pending_get pop(client_state& c) noexcept;
  [[nodiscard]] static std::size_t cost_of(const std::string& rel) noexcept {
    return sizeof(pending_get) + rel.size();
  }
  [[nodiscard]] std::size_t queued() const noexcept { return queued_; }
  [[nodiscard]] std::size_t queued_bytes() const noexcept { return queued_bytes_; }
  [[nodiscard]] std::size_t size() const noexcept { return clients_.size(); }

  // Forgets the clients idle for a while (nothing queued, running or heard of lately),
  // keeping only when each was last heard from, for active().
  void prune(std::uint64_t now) noexcept;
  // Distinct client addresses heard from in the last minute.
  [[nodiscard]] std::size_t active(std::uint64_t now) noexcept;
  void clear() noexcept;

 private:
  using map = std::unordered_map<peer_key, client_state, peer_key_hash>;
  // Forgets a client: its queue, its place in by_recency_ and in per_prefix_.
  void forget(map::iterator it) noexcept;

  limits limits_;
  stats& stats_;  // unowned
  map clients_;
  std::list<peer_key> by_recency_;  // clients_, most recently heard from first
  std::unordered_map<std::uint64_t, std::size_t> per_prefix_;  // clients_ by network
  // When forgotten clients were last heard from, for active(); a minute at most.
  std::unordered_map<peer_key, std::uint64_t, peer_key_hash> seen_;
  std::size_t queued_ = 0;
  std::size_t queued_bytes_ = 0;  // of the waiting GETs, their paths included
};

}  // namespace ferry::server
