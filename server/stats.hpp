#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>

namespace ferry::server {

// Counters, readable from any thread.
struct stats {
  std::atomic<std::uint64_t> datagrams_in{0}, bytes_in{0}, datagrams_out{0}, bytes_out{0};
  std::atomic<std::uint64_t> list_requests{0}, stat_requests{0}, get_requests{0};
  // Blocks asked for: one per GET, `count` per GET-RUN (a datagram counts once in get_requests).
  std::atomic<std::uint64_t> blocks_asked{0};
  std::atomic<std::uint64_t> dropped_malformed{0}, dropped_corrupt{0}, dropped_truncated{0};
  // Requests without a valid token, answered (within the amplification limit) by a token.
  std::atomic<std::uint64_t> unvalidated{0}, tokens_sent{0};
  // Fresh tokens handed unasked to validated clients whose own was about to expire.
  std::atomic<std::uint64_t> tokens_refreshed{0};
  // Replies withheld because they would have exceeded the amplification limit.
  std::atomic<std::uint64_t> amplification_withheld{0};
  // GETs dropped because their client already had max_client_queue waiting (or the server
  // its total), and times serving paused for --max-rate or --max-client-rate.
  std::atomic<std::uint64_t> dropped_queue_full{0}, rate_waits{0};
  std::atomic<std::uint64_t> recv_errors{0};
  // Requests from addresses outside --allow, answered with permission_denied (within 3x).
  std::atomic<std::uint64_t> denied{0};
  // --key-file: requests answered authentication_required (unsealed, or sealed in the other
  // mode; and sealed ones at a server without a key), and datagrams whose seal did not check.
  std::atomic<std::uint64_t> unauthenticated{0}, dropped_unauthenticated{0};
  std::atomic<std::uint64_t> errors_sent{0}, busy_sent{0}, send_errors{0}, send_dropped{0};
  std::atomic<std::uint64_t> reads_inline{0}, reads_pooled{0}, digests_computed{0};
  // UDP GSO sends (each several datagrams), and refusals that made a client or all fall back.
  std::atomic<std::uint64_t> gso_sends{0}, gso_refused{0};
  std::atomic<std::uint64_t> internal_errors{0};
  // Clients refused a place because their prefix had max_clients_per_prefix, and clients
  // forgotten to make room for a newer one.
  std::atomic<std::uint64_t> prefix_full{0}, clients_evicted{0};
  // The most bytes ever held at once for requests: waiting GETs, block buffers of pool jobs and
  // datagrams waiting for the socket buffer. Each is bounded; this shows how near they came.
  std::atomic<std::uint64_t> held_peak{0};
  // Access-log lines dropped because the log file fell too far behind.
  std::atomic<std::uint64_t> access_lines_dropped{0};
  // Error replies sent, by the code sent (protocol::errc values index it).
  std::array<std::atomic<std::uint64_t>, 16> refusals{};
  // active_addresses() as of its last publication (request_counters()).
  std::atomic<std::uint64_t> active_addresses{0};
};

// Logs the counters of `servers` (one a worker) summed as one event, with each one's GET count in
// worker_gets. Any thread; active_addresses is the sum of what each last published.
void log_counters(std::span<const stats* const> servers, bool force) noexcept;

}  // namespace ferry::server
