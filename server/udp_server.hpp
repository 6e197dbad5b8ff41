#pragma once

#include <sys/uio.h>
#include <uv.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/address.hpp"
#include "common/path_safety.hpp"
#include "common/protocol.hpp"
#include "common/uv_owned.hpp"
#include "server/address_validation.hpp"
#include "server/file_ops.hpp"
#include "server/rate_limit.hpp"

namespace ferry::server {

// Whether a socket lets others bind its address and port too (SO_REUSEPORT), so that the kernel
// spreads clients across them by a hash of their address and port.
enum class port_sharing : std::uint8_t {
  none,
  // Set after bind: the bind fails on a port that anything holds, but later sockets may join.
  later,
  // Set before bind: joins a group of sharing sockets already on the port (of the same user).
  any,
};

struct config {
  std::string root;
  std::string bind = "127.0.0.1";
  std::uint16_t port = default_port;  // 0 takes a free port
  unsigned workers = 1;               // loops, each with its own socket; 0: one per core
  port_sharing share_port = port_sharing::none;  // any: --reuseport
  std::uint32_t max_block = protocol::max_block_size;
  std::size_t max_jobs = 64;               // queued file-system jobs; beyond: errc::busy
  std::size_t max_digest_jobs = 2;         // whole-file digests computed at once
  std::size_t max_send_queue = 4u << 20;  // bytes waiting for a full socket buffer to drain
  int socket_buffer = 8 << 20;            // SO_RCVBUF / SO_SNDBUF wish
  double stats_interval = 0;              // seconds between counter events; 0: SIGUSR1 only
  std::uint64_t max_rate = 0;             // bytes per second sent in total; 0: no limit
  std::uint64_t max_client_rate = 0;      // bytes per second to one client address; 0: no limit
  std::size_t max_client_queue = 256;     // GETs waiting per client address; beyond: dropped
  std::size_t max_client_jobs = 32;       // file-system jobs per client address; beyond: busy
  // Validated client addresses (address and port) kept at once; when full, the one heard from
  // least recently makes room. At most max_clients_per_prefix of them share a /24 (IPv4) or a
  // /56 (IPv6), so one host or network cannot fill the table to shut others out.
  std::size_t max_clients = 65'536;
  std::size_t max_clients_per_prefix = 4'096;
  // Off only for the fuzz harness, which cannot echo tokens: every request is then served
  // whatever its source, as if validated.
  bool validate_addresses = true;
};

// Counters, readable from any thread.
struct stats {
  std::atomic<std::uint64_t> datagrams_in{0}, bytes_in{0}, datagrams_out{0}, bytes_out{0};
  std::atomic<std::uint64_t> list_requests{0}, stat_requests{0}, get_requests{0};
  // Blocks asked for: one per GET, `count` per GET-RUN (a datagram counts once in get_requests).
  std::atomic<std::uint64_t> blocks_asked{0};
  std::atomic<std::uint64_t> dropped_malformed{0}, dropped_corrupt{0}, dropped_truncated{0};
  // Requests without a valid token, answered (within the amplification limit) by a token.
  std::atomic<std::uint64_t> unvalidated{0}, tokens_sent{0};
  // Replies withheld because they would have exceeded the amplification limit.
  std::atomic<std::uint64_t> amplification_withheld{0};
  // GETs dropped because their client already had max_client_queue waiting (or the server
  // its total), and times serving paused for --max-rate or --max-client-rate.
  std::atomic<std::uint64_t> dropped_queue_full{0}, rate_waits{0};
  std::atomic<std::uint64_t> recv_errors{0};
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
  // Error replies sent, by the code sent (protocol::errc values index it).
  std::array<std::atomic<std::uint64_t>, 16> refusals{};
  // active_addresses() as of its last publication (request_counters()).
  std::atomic<std::uint64_t> active_addresses{0};
};

// What the workers of one process share (ferryd --workers): the address-validation secret, so
// that a token from one worker is valid at every other when the kernel moves a client, and the
// --max-rate bucket, so that the limit holds for the process. Immutable or locked.
struct shared_state {
  explicit shared_state(std::uint64_t max_rate) : total_rate{max_rate, 0} {}
  const address_validator validator;
  shared_token_bucket total_rate;
};

class pool_job;

// A ferry server on one UDP socket. Requests arrive in batches (recvmmsg); GETs wait in one
// queue per client address and are served round-robin, so a client that asks for more than
// its share only lengthens its own queue. Lives on the loop thread: construct, run the loop, call
// stop() from the loop (or request_stop() from anywhere), and destroy it after uv_run returns.
class udp_server {
 public:
  // Opens the root and binds the socket. Throws on any setup error, with a message for the user.
  // Servers of one process pass the same `shared`; null makes one of their own.
  udp_server(uv_loop_t* loop, config cfg, std::shared_ptr<shared_state> shared = nullptr);
  ~udp_server();
  udp_server(const udp_server&) = delete;
  udp_server& operator=(const udp_server&) = delete;

  [[nodiscard]] endpoint local_endpoint() const;
  [[nodiscard]] const struct stats& counters() const noexcept { return stats_; }

  // Stops receiving and closes every handle; pending jobs finish and are then discarded.
  void stop() noexcept;
  // Thread-safe: asks the loop thread to stop().
  void request_stop() noexcept;
  // Thread-safe: asks the loop thread to publish active_addresses() in counters() and then to
  // call `done`, which was set before the loop started. Nothing happens once stopping.
  void request_counters() noexcept;
  void on_counters_published(std::function<void()> done) { counters_done_ = std::move(done); }

  // Logs every counter as one event. `force` prints it whatever the log level (SIGUSR1).
  void log_counters(bool force) noexcept;
  // Stores active_addresses() in counters(). Loop thread, or any once the loop has ended.
  void publish_active_addresses() noexcept;
  // True when nothing the server took in is still being worked on: no file-system job, no
  // queued GET, no datagram waiting for the socket. Loop thread only; for harnesses and tests.
  [[nodiscard]] bool quiescent() const noexcept {
    return jobs_in_flight_ == 0 && queued_total_ == 0 && send_queue_.empty();
  }

  // Distinct client addresses heard from in the last minute. Loop thread only.
  [[nodiscard]] std::size_t active_addresses() noexcept;

  // Decodes one datagram from `peer` and answers it. Loop thread only; throws only on
  // allocation failure. on_recv() calls it, and so does the fuzz harness, without a socket.
  void handle_datagram(std::span<const std::byte> bytes, const endpoint& peer);

 private:
  friend class pool_job;
  friend class get_job;
  friend class stat_job;
  friend class list_job;
  friend class digest_job;

  // Identifies a client by its address and port.
  struct peer_key {
    address_key bytes{};  // family, address and port
    friend bool operator==(const peer_key&, const peer_key&) = default;
    static peer_key of(const sockaddr* sa) noexcept;
  };
  struct peer_key_hash {
    std::size_t operator()(const peer_key& k) const noexcept;
  };
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
    std::uint64_t turn = 0;            // the last turn it was considered in
    std::size_t served_in_turn = 0;    // GETs served to it in that turn
    bool ready = false;                // in ready_
    bool gso = true;                   // false once the kernel refused UDP GSO towards it
    std::list<peer_key>::iterator recency;  // its place in by_recency_
  };

  static constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

  void on_poll(int status, int events) noexcept;
  void receive_batch() noexcept;
  void flush_send_queue() noexcept;
  void update_poll() noexcept;
  // Starts the idle handle that runs serve_turn() once per turn of the loop, after I/O.
  void schedule_serving() noexcept;
  void serve_turn() noexcept;
  // A debug line for a validated request.
  void log_request(const endpoint& peer, std::uint64_t id, const protocol::request& req) noexcept;
  void serve_get(client_state& c, const peer_key& key, pending_get& g);
  // Serves consecutive GETs of one file, reading the cached ones with a single preadv2.
  void serve_run(client_state& c, const peer_key& key, std::span<pending_get> run);
  struct open_file;
  // Serves the GETs at the front of `run` straight from the file's mapping; returns how many.
  std::size_t serve_mapped(client_state& c, const open_file& f, std::span<pending_get> run);
  [[nodiscard]] client_state* client_for(const endpoint& peer) noexcept;
  void prune_clients() noexcept;
  void check_root() noexcept;
  void note_root_refusal(protocol::errc code) noexcept;
  bool root_gone_ = false;
  std::uint64_t root_refused_ms_ = 0;

  void handle_get(client_state& c, std::uint64_t id, const protocol::get_request& req);
  void handle_stat(client_state& c, std::uint64_t id, const protocol::stat_request& req);
  void handle_list(client_state& c, std::uint64_t id, const protocol::list_request& req);

  bool submit(std::unique_ptr<pool_job> job);
  // `charge`: count the bytes against --max-rate (false when they were charged in advance).
  void send(const endpoint& peer, std::span<const iovec> bufs, bool charge = true) noexcept;
  // Sends `reply` if it encodes to at most `limit` bytes; otherwise withholds it.
  void send_reply(const endpoint& peer, std::uint64_t id, const protocol::reply& reply,
                  std::size_t limit = no_limit) noexcept;
  void send_error(const endpoint& peer, std::uint64_t id, protocol::errc code,
                  std::size_t limit = no_limit) noexcept;
  void send_data(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                 const read_outcome& r, const std::byte* payload, bool charge = true) noexcept;
  void finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info);

  struct open_file {
    std::shared_ptr<unique_fd> fd;
    // To ask which pages are in the page cache (never read); null for an empty file.
    std::shared_ptr<const file_mapping> whole;
    std::uint64_t opened_ms = 0;
    bool in_memory = false;  // on tmpfs or ramfs: read inline without RWF_NOWAIT
  };
  // The cached entry for `rel`, or null; valid until the next call that changes files_.
  [[nodiscard]] const open_file* cached_file(const std::string& rel);
  void remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd);

  struct version_less {
    bool operator()(const protocol::file_version& a, const protocol::file_version& b) const;
  };

  uv_loop_t* loop_;  // unowned
  config cfg_;
  std::shared_ptr<shared_state> shared_;
  unique_fd root_;
  unique_fd socket_;
  const address_validator& validator_;  // in shared_
  std::unique_ptr<uv_owned<uv_poll_t>> poll_;
  uv_owned<uv_idle_t> serve_idle_;   // runs while GETs wait and nothing else wakes the loop
  uv_owned<uv_timer_t> rate_timer_;  // wakes serving when a rate limit allows more
  uv_owned<uv_timer_t> prune_timer_;  // forgets idle clients
  bool rate_timer_armed_ = false;
  int poll_events_ = 0;
  uv_owned<uv_async_t> stop_async_;
  uv_owned<uv_async_t> counters_async_;
  std::function<void()> counters_done_;
  std::mutex stop_mutex_;  // guards both asyncs between request_*() and their closing
  bool stopping_ = false;
  struct stats stats_;

  std::unique_ptr<std::byte[]> recv_buf_;   // every datagram is decoded from here, then dropped
  // Inline reads land here, each right behind the room for its reply's prefix, and wait as
  // whole datagrams until flush_out() sends them together (one sendmmsg, UDP GSO per client).
  struct outgoing {
    peer_key key;
    endpoint peer;
    std::size_t at = 0;    // offset in out_buf_
    std::size_t head = 0;  // bytes there: the whole reply, or its prefix if `payload` is set
    std::size_t size = 0;  // of the whole reply
    const std::byte* payload = nullptr;  // in `keep`, sent from there without a copy
    std::shared_ptr<const file_mapping> keep;
    bool gso = true;  // may go out in one UDP GSO send with its neighbours
  };
  std::unique_ptr<std::byte[]> out_buf_;
  std::size_t out_used_ = 0;
  std::vector<outgoing> out_;
  bool gso_ok_ = true;  // cleared when the kernel or the device cannot do UDP GSO at all
  // Where the payload of a reply of up to `block` bytes goes; flushes first if it would not fit.
  [[nodiscard]] std::byte* out_payload_slot(std::uint32_t block) noexcept;
  // Completes the reply whose payload out_payload_slot() handed out and was read as `r`.
  void add_out(const client_state& c, std::uint64_t id, std::uint64_t offset,
               const read_outcome& r) noexcept;
  // Queues a reply whose payload stays in `map`; false if the file shrank under the read.
  bool add_out_mapped(const client_state& c, std::uint64_t id, std::uint64_t offset,
                      const read_outcome& r, const std::shared_ptr<const file_mapping>& map);
  void flush_out() noexcept;
  // The iovecs of one reply (one or two) into `out`; returns how many.
  std::size_t reply_iov(const outgoing& o, iovec* out) const noexcept;
  // Keeps a copy of a datagram that met a full socket buffer, within max_send_queue.
  void queue_datagram(const endpoint& peer, std::span<const iovec> bufs, std::size_t total) noexcept;
  std::size_t jobs_in_flight_ = 0;
  std::size_t digest_jobs_ = 0;
  std::size_t job_bytes_ = 0;  // block buffers of the pool jobs in flight
  // Raises stats::held_peak to what is held now, if that is more.
  void note_held() noexcept;

  // Datagrams that met a full socket buffer, sent as soon as it drains. While any wait here,
  // no GET is served: reading blocks that cannot be sent would only grow this queue.
  struct queued_datagram {
    endpoint peer;
    std::unique_ptr<std::byte[]> bytes;
    std::size_t size = 0;
  };
  std::deque<queued_datagram> send_queue_;
  std::size_t send_queued_ = 0;  // bytes in send_queue_
  shared_token_bucket& total_rate_;  // in shared_

  std::unordered_map<peer_key, client_state, peer_key_hash> clients_;
  std::list<peer_key> by_recency_;  // clients_, most recently heard from first
  std::unordered_map<std::uint64_t, std::size_t> per_prefix_;  // clients_ by prefix_of()
  // Forgets a client: its queue, its place in by_recency_ and in per_prefix_.
  void forget_client(std::unordered_map<peer_key, client_state, peer_key_hash>::iterator it) noexcept;
  std::deque<peer_key> ready_;  // clients with queued GETs, in round-robin order
  // When forgotten clients were last heard from, for active_addresses(); a minute at most.
  std::unordered_map<peer_key, std::uint64_t, peer_key_hash> seen_;
  std::size_t queued_total_ = 0;
  std::size_t queued_bytes_ = 0;  // of the waiting GETs, their paths included
  std::uint64_t turn_ = 0;
  std::size_t clients_last_turn_ = 0;

  std::unordered_map<std::string, open_file> files_;  // recently opened files, by path
  std::map<protocol::file_version, protocol::digest128, version_less> digests_;
  std::vector<protocol::file_version> digest_order_;  // insertion order, for eviction
  std::set<protocol::file_version, version_less> digesting_;  // being hashed now
  std::shared_ptr<dir_cache> dirs_;  // shared with pool jobs
};

// Logs the counters of `servers` summed as one event, with each one's GET count in worker_gets.
// Any thread; active_addresses is the sum of what each last published.
void log_counters(std::span<const udp_server* const> servers, bool force) noexcept;

// Runs cfg.workers servers, each on its own loop and thread and all on one port, until SIGINT or
// SIGTERM. Prints "listening on ADDR:PORT" to stdout first. Returns the process exit code.
int run_until_signalled(const config& cfg);

}  // namespace ferry::server
