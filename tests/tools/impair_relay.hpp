#pragma once

#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tests/tools/impair_config.hpp"
#include "tests/tools/impair_random.hpp"

namespace ferry::impair {

// Counters for one direction. `received` counts datagrams read from a socket; every one of them
// ends in exactly one of forwarded or a dropped_* counter, plus one more forwarded (or drop) per
// duplicate.
struct direction_stats {
  std::uint64_t received = 0;
  std::uint64_t forwarded = 0;
  std::uint64_t dropped_loss = 0;
  std::uint64_t dropped_blackout = 0;
  std::uint64_t dropped_queue = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t reordered = 0;
  std::uint64_t corrupted = 0;
  std::uint64_t corrupted_payload = 0;   // Those of `corrupted` flipped in a data block's payload.
  std::uint64_t dropped_send = 0;        // The kernel refused it or our send backlog was full.
  std::uint64_t dropped_no_mapping = 0;  // Too many clients, or the mapping expired meanwhile.
  std::uint64_t dropped_foreign = 0;     // With --follow-upstream-port: not from the upstream host.
  std::uint64_t dropped_truncated = 0;   // Larger than the receive buffer; cannot happen for UDP.
  std::uint64_t dropped_memory = 0;      // The proxy already held too many bytes in delay queues.
  std::uint64_t dropped_shutdown = 0;    // Still delayed when the proxy exited.
  std::uint64_t recv_errors = 0;         // E.g. ICMP port unreachable reported by the kernel.
  // With --stats-interval: `received` per interval, counted from the first datagram.
  std::vector<std::uint64_t> received_series;

  [[nodiscard]] std::uint64_t dropped_other() const noexcept {
    return dropped_send + dropped_no_mapping + dropped_foreign + dropped_truncated +
           dropped_memory + dropped_shutdown;
  }
};

namespace detail {

// A datagram that outlives its receive callback: delayed, held for reordering, or waiting in
// libuv's send queue. The payload follows the struct in the same allocation.
struct packet {
  uv_udp_send_t req;  // Must stay first: on_send recovers the packet from the request address.
  packet* next_free = nullptr;
  std::uint64_t due_ns = 0;  // Release time on the uv_hrtime clock.
  std::uint64_t seq = 0;     // Tie-breaker so equal release times keep arrival order.
  std::size_t heap_index = 0;
  std::uint64_t generation = 0;  // Of the mapping it belongs to, to detect reuse of the slot.
  std::uint32_t slot = 0;
  std::uint32_t size = 0;
  std::uint32_t remaining = 0;  // Datagrams that must still overtake a held packet.
  std::uint8_t size_class = 0;
  direction dir = direction::up;
  bool held = false;
  double jitter_u = 0;  // The jitter draw, kept so a held packet is delayed like the others.
  sockaddr_storage client{};
  socklen_t client_length = 0;

  char* data() noexcept { return reinterpret_cast<char*>(this) + sizeof(packet); }
};

// Recycles packets in power-of-two size classes from 2 KiB to 64 KiB, so steady traffic does
// not allocate. Memory goes back to the system only when the pool is destroyed.
class packet_pool {
 public:
  packet_pool() = default;
  packet_pool(const packet_pool&) = delete;
  packet_pool& operator=(const packet_pool&) = delete;
  ~packet_pool();

  // Returns a packet with room for `size` bytes (at most 65536). Throws std::bad_alloc.
  packet* acquire(std::size_t size);
  void release(packet* p) noexcept;
  [[nodiscard]] static std::size_t capacity_of(std::size_t size_class) noexcept {
    return std::size_t{2048} << size_class;
  }

 private:
  static constexpr std::size_t class_count = 6;
  std::array<packet*, class_count> free_{};
};

// A client's source address in a form that can be hashed and compared.
struct client_key {
  std::array<std::uint8_t, 16> address{};
  std::uint32_t scope = 0;
  std::uint16_t port = 0;
  std::uint8_t family = 0;
  friend bool operator==(const client_key&, const client_key&) = default;
};

struct client_key_hash {
  std::size_t operator()(const client_key& k) const noexcept;
};

inline constexpr std::size_t max_held_per_mapping = 16;

// One client: its own socket connected to the upstream server (unless it follows the server's
// port), so the server sees one source port per client. Owned by the relay's slot table until
// closed; freed in the close callback.
struct mapping {
  uv_udp_t socket{};
  // With --follow-upstream-port the socket stays unconnected, and datagrams to the server go to
  // where it last answered from; zero length until it has answered.
  sockaddr_storage server{};
  socklen_t server_length = 0;
  std::uint32_t slot = 0;
  std::uint64_t generation = 0;
  client_key key;
  sockaddr_storage client{};
  socklen_t client_length = 0;
  std::uint64_t last_active_ms = 0;
  // Packets held for reordering, oldest first; unowned, the delay heap owns them.
  std::array<std::array<packet*, max_held_per_mapping>, 2> held{};
  std::array<std::size_t, 2> held_count{};
};

}  // namespace detail

// The proxy. Construct it, call start() (throws on setup failure), then run() on the same thread.
// Not movable: libuv keeps pointers to the embedded handles.
class relay {
 public:
  explicit relay(const config& cfg);
  relay(const relay&) = delete;
  relay& operator=(const relay&) = delete;
  ~relay();

  // Binds the listen socket and arms the timers and signal handlers. Throws std::runtime_error.
  void start();
  // Returns the bound listen address, e.g. "127.0.0.1:40123" or "[::1]:40123".
  [[nodiscard]] std::string local_address() const;
  // Runs the loop until SIGINT, SIGTERM or --max-seconds, then closes everything.
  void run();

  [[nodiscard]] const direction_stats& stats(direction d) const noexcept {
    return stats_[index_of(d)];
  }
  // The blackouts of one direction, with the start of those that began at a datagram filled in.
  [[nodiscard]] const std::vector<blackout_window>& blackouts(direction d) const noexcept {
    return cfg_.dir(d).blackouts;
  }
  // Bytes of socket buffer the kernel actually granted on the listen socket (receive, send).
  [[nodiscard]] std::pair<int, int> socket_buffers() const noexcept { return buffers_; }

 private:
  // The per-datagram random draws. All are taken for every datagram, whether used or not, so
  // the fate of the N-th datagram depends only on the seed and N, not on timing.
  struct fate {
    double loss;
    double dup;
    double reorder;
    double corrupt;
    std::uint64_t corrupt_position;
    std::uint64_t corrupt_mask;
    double jitter;
    double dup_jitter;
  };

  // The serialization model of one direction's link: when its last queued bit leaves.
  struct link_state {
    std::uint64_t free_at_ns = 0;
  };

  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf) noexcept;
  // The checks both receive callbacks make first; counts what it drops. True: forward it.
  bool receivable(direction d, ssize_t nread, const sockaddr* addr, unsigned flags) noexcept;
  static void on_listen_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                             const sockaddr* addr, unsigned flags) noexcept;
  static void on_upstream_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf,
                               const sockaddr* addr, unsigned flags) noexcept;
  static void on_send(uv_udp_send_t* req, int status) noexcept;
  static void on_heap_timer(uv_timer_t* timer) noexcept;
  static void on_sweep_timer(uv_timer_t* timer) noexcept;
  static void on_deadline(uv_timer_t* timer) noexcept;
  static void on_signal(uv_signal_t* handle, int signum) noexcept;

  detail::mapping* find_or_create_mapping(const sockaddr* addr);
  void close_mapping(detail::mapping* m) noexcept;
  [[nodiscard]] detail::mapping* mapping_for(std::uint32_t slot,
                                             std::uint64_t generation) const noexcept;

  void handle_datagram(direction d, detail::mapping& m, char* data, std::size_t size);
  [[nodiscard]] fate draw_fate(direction d) noexcept;
  // Counts the datagram just received in its interval of --stats-interval. May throw bad_alloc.
  void count_in_series(direction_stats& st);
  // Starts the blackouts that begin with datagram number `n`.
  void begin_blackouts_at(std::uint64_t n, std::uint64_t now_ns) noexcept;
  [[nodiscard]] bool in_blackout(const direction_config& dc, std::uint64_t now_ns) const noexcept;
  // Runs the rate limiter and delay for one datagram. Returns false if the queue dropped it.
  [[nodiscard]] bool admit(direction d, std::size_t size, double jitter_u, std::uint64_t now_ns,
                           std::uint64_t& due_ns);
  void forward_buffer(direction d, detail::mapping& m, char* data, std::size_t size,
                      double jitter_u, std::uint64_t now_ns);
  void hold(direction d, detail::mapping& m, const char* data, std::size_t size, double jitter_u,
            std::uint64_t now_ns);
  void advance_held(direction d, detail::mapping& m, std::uint64_t now_ns);
  void release_held(detail::packet* p, std::uint64_t now_ns);
  void unlink_held(detail::packet* p) noexcept;
  [[nodiscard]] detail::packet* make_packet(direction d, const detail::mapping& m, const char* data,
                                            std::size_t size);
  void transmit(direction d, detail::mapping* m, char* data, std::size_t size,
                detail::packet* owned) noexcept;
  void drop_packet(detail::packet* p) noexcept;

  // Takes ownership of `p`; if the heap cannot grow, returns it to the pool and rethrows.
  void heap_push(detail::packet* p);
  detail::packet* heap_pop() noexcept;
  void heap_remove(detail::packet* p) noexcept;
  void heap_sift_up(std::size_t i) noexcept;
  void heap_sift_down(std::size_t i) noexcept;
  void rearm_heap_timer() noexcept;

  void stop() noexcept;
  void enlarge_buffers(uv_udp_t* handle) noexcept;

  config cfg_;
  uv_loop_t loop_{};
  bool loop_ready_ = false;
  uv_udp_t listen_{};
  uv_timer_t heap_timer_{};
  uv_timer_t sweep_timer_{};
  uv_timer_t deadline_timer_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  bool started_ = false;
  bool stopping_ = false;

  std::unique_ptr<char[]> slab_;  // Receive buffer shared by all sockets; see on_alloc.
  std::size_t slab_size_ = 0;
  detail::packet_pool pool_;
  std::vector<detail::packet*> heap_;  // Min-heap on (due_ns, seq).
  std::uint64_t armed_due_ns_ = 0;     // Zero when the heap timer is idle.
  std::uint64_t next_seq_ = 0;
  std::size_t held_bytes_ = 0;

  std::vector<detail::mapping*> slots_;
  std::vector<std::uint32_t> free_slots_;
  std::unordered_map<detail::client_key, std::uint32_t, detail::client_key_hash> by_client_;
  std::uint64_t next_generation_ = 1;
  bool mapping_error_reported_ = false;
  // With --follow-upstream-port, a reply must match this in all but the port.
  detail::client_key upstream_key_;

  std::array<xoshiro256ss, 2> rng_;
  std::array<link_state, 2> links_{};
  std::array<bool, 2> impaired_{};
  std::array<direction_stats, 2> stats_{};
  std::uint64_t epoch_ns_ = 0;        // When the first datagram arrived; blackouts count from here.
  std::uint64_t received_total_ = 0;  // Datagrams received in both directions.
  std::pair<int, int> buffers_{0, 0};
};

}  // namespace ferry::impair
