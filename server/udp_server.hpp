#pragma once

#include <uv.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
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
#include "server/file_ops.hpp"

namespace ferry::server {

struct config {
  std::string root;
  std::string bind = "127.0.0.1";
  std::uint16_t port = default_port;  // 0 takes a free port
  std::uint32_t max_block = protocol::max_block_size;
  std::size_t max_jobs = 64;               // queued file-system jobs; beyond: errc::busy
  std::size_t max_digest_jobs = 2;         // whole-file digests computed at once
  std::size_t max_send_queue = 16u << 20;  // bytes waiting in libuv's send queue
  int socket_buffer = 8 << 20;             // SO_RCVBUF / SO_SNDBUF wish
  double stats_interval = 0;               // seconds between counter events; 0: SIGUSR1 only
};

// Counters, readable from any thread.
struct stats {
  std::atomic<std::uint64_t> datagrams_in{0}, bytes_in{0}, datagrams_out{0}, bytes_out{0};
  std::atomic<std::uint64_t> list_requests{0}, stat_requests{0}, get_requests{0};
  std::atomic<std::uint64_t> dropped_malformed{0}, dropped_corrupt{0}, dropped_truncated{0};
  std::atomic<std::uint64_t> recv_errors{0};
  std::atomic<std::uint64_t> errors_sent{0}, busy_sent{0}, send_errors{0}, send_dropped{0};
  std::atomic<std::uint64_t> reads_inline{0}, reads_pooled{0}, digests_computed{0};
  std::atomic<std::uint64_t> internal_errors{0};
  // Error replies sent, by the code sent (protocol::errc values index it).
  std::array<std::atomic<std::uint64_t>, 16> refusals{};
};

class pool_job;

// A ferry server on one UDP socket. Lives on the loop thread: construct, run the loop, call
// stop() from the loop (or request_stop() from anywhere), and destroy it after uv_run returns.
class udp_server {
 public:
  // Opens the root and binds the socket. Throws on any setup error, with a message for the user.
  udp_server(uv_loop_t* loop, config cfg);
  ~udp_server();
  udp_server(const udp_server&) = delete;
  udp_server& operator=(const udp_server&) = delete;

  [[nodiscard]] endpoint local_endpoint() const;
  [[nodiscard]] const struct stats& counters() const noexcept { return stats_; }

  // Stops receiving and closes every handle; pending jobs finish and are then discarded.
  void stop() noexcept;
  // Thread-safe: asks the loop thread to stop().
  void request_stop() noexcept;

  // Logs every counter as one event. `force` prints it whatever the log level (SIGUSR1).
  void log_counters(bool force) noexcept;
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

  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf) noexcept;
  static void on_recv(uv_udp_t* h, ssize_t nread, const uv_buf_t* buf, const sockaddr* from,
                      unsigned flags) noexcept;

  void handle_get(const endpoint& peer, std::uint64_t id, const protocol::get_request& req);
  void handle_stat(const endpoint& peer, std::uint64_t id, const protocol::stat_request& req);
  void handle_list(const endpoint& peer, std::uint64_t id, const protocol::list_request& req);

  bool submit(std::unique_ptr<pool_job> job);
  void send(const endpoint& peer, std::span<const uv_buf_t> bufs) noexcept;
  void send_reply(const endpoint& peer, std::uint64_t id, const protocol::reply& reply) noexcept;
  void send_error(const endpoint& peer, std::uint64_t id, protocol::errc code) noexcept;
  void send_data(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                 const read_outcome& r, const std::byte* payload) noexcept;
  void finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info);

  struct open_file {
    std::shared_ptr<unique_fd> fd;
    std::uint64_t opened_ms = 0;
  };
  [[nodiscard]] std::shared_ptr<unique_fd> cached_file(const std::string& rel);
  void remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd);

  struct version_less {
    bool operator()(const protocol::file_version& a, const protocol::file_version& b) const;
  };

  uv_loop_t* loop_;  // unowned
  config cfg_;
  unique_fd root_;
  uv_owned<uv_udp_t> udp_;
  uv_owned<uv_async_t> stop_async_;
  std::mutex stop_mutex_;  // guards stop_async_ between request_stop() and its closing
  bool stopping_ = false;
  struct stats stats_;

  std::unique_ptr<std::byte[]> recv_buf_;   // every datagram is decoded from here, then dropped
  std::unique_ptr<std::byte[]> block_buf_;  // inline reads land here and are sent from here
  std::size_t jobs_in_flight_ = 0;
  std::size_t digest_jobs_ = 0;
  std::size_t send_queued_ = 0;

  std::unordered_map<std::string, open_file> files_;  // recently opened files, by path
  std::map<protocol::file_version, protocol::digest128, version_less> digests_;
  std::vector<protocol::file_version> digest_order_;  // insertion order, for eviction
  std::set<protocol::file_version, version_less> digesting_;  // being hashed now
  std::shared_ptr<dir_cache> dirs_;  // shared with pool jobs

  // When each client address was last heard from, for active_addresses(). Bounded: old
  // entries are pruned when it grows, so a flood of spoofed sources cannot grow it for ever.
  struct peer_key {
    std::array<std::byte, 18> bytes{};  // address (16) and port (2)
    friend bool operator==(const peer_key&, const peer_key&) = default;
  };
  struct peer_key_hash {
    std::size_t operator()(const peer_key& k) const noexcept;
  };
  void note_peer(const sockaddr* from) noexcept;
  std::unordered_map<peer_key, std::uint64_t, peer_key_hash> peers_;
};

// Runs a server on a fresh loop until SIGINT or SIGTERM. Prints "listening on ADDR:PORT" to
// stdout first. Returns the process exit code.
int run_until_signalled(const config& cfg);

}  // namespace ferry::server
