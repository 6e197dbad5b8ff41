#pragma once

#include <sys/uio.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "common/address.hpp"
#include "common/protocol.hpp"
#include "common/udp_batch.hpp"
#include "common/unique_fd.hpp"
#include "common/uv_owned.hpp"
#include "server/access_log.hpp"
#include "server/block_reader.hpp"
#include "server/client_table.hpp"
#include "server/config.hpp"
#include "server/file_cache.hpp"
#include "server/file_ops.hpp"
#include "server/key_gate.hpp"
#include "server/outbox.hpp"
#include "server/pool_jobs.hpp"
#include "server/reply_batch.hpp"
#include "server/scheduler.hpp"
#include "server/served_root.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// A ferry server on one UDP socket: it reads requests in batches (recvmmsg), validates their
// source, and hands each to the room that answers it: GETs to the scheduler, which serves them
// from the file cache into the reply batch, or through the job pool; STAT and LIST to the job
// pool. Lives on the loop thread: construct, run the loop, call stop() from the loop (or
// request_stop() from anywhere), and destroy it after uv_run returns.
class udp_server final : private job_host, private outbox::watcher {
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
    return jobs_.in_flight() == 0 && clients_.queued() == 0 && outbox_.queue_empty();
  }

  // Distinct client addresses heard from in the last minute. Loop thread only.
  [[nodiscard]] std::size_t active_addresses() noexcept;

  // Decodes one datagram from `peer` and answers it. Loop thread only; throws only on
  // allocation failure. on_poll() calls it, and so does the fuzz harness, without a socket.
  void handle_datagram(std::span<std::byte> bytes, const endpoint& peer);

 private:
  void on_poll(int status, int events) noexcept;
  void receive_batch() noexcept;
  void update_poll() noexcept;
  // Starts the idle handle that runs serve_turn() once per turn of the loop, after I/O.
  void schedule_serving() noexcept;
  void serve_turn() noexcept;
  // Serves consecutive GETs of one file: on the loop what the page cache holds, the rest
  // through the pool.
  void serve_run(client_state& c, std::span<pending_get> run);
  // Hands a GET to the pool, with the file's descriptor if one is cached.
  void read_off_loop(client_state& c, pending_get& g, std::shared_ptr<unique_fd> file);

  void handle_get(client_state& c, std::uint64_t id, const protocol::get_request& req);
  void handle_stat(client_state& c, std::uint64_t id, const protocol::stat_request& req);
  void handle_list(client_state& c, std::uint64_t id, const protocol::list_request& req);
  // Hands `c` a fresh address token if the one `h` echoes is due to be replaced.
  void refresh_token(client_state& c, const protocol::header& h, std::uint64_t now) noexcept;
  // Refuses a request before it is queued, and counts it in the access log.
  void refuse(client_state& c, std::uint64_t id, access_op op, std::string_view path,
              protocol::errc code, std::uint64_t requests = 1) noexcept;

  // Raises stats::held_peak to what is held now, if that is more.
  void note_held() noexcept;

  // job_host: what finished pool jobs do.
  void send_error(const endpoint& peer, std::uint64_t id, protocol::errc code) noexcept override {
    outbox_.send_error(peer, id, code);
  }
  void send_reply(const endpoint& peer, std::uint64_t id,
                  const protocol::reply& reply) noexcept override {
    outbox_.send_reply(peer, id, reply);
  }
  void send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                  const read_outcome& r, const std::byte* payload) noexcept override {
    outbox_.send_block(peer, id, offset, r, payload);
  }
  void remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd) override {
    files_.remember(rel, std::move(fd), uv_now(loop_));
  }
  void finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) override;
  void root_refused(protocol::errc code) noexcept override { root_.refused(code, uv_now(loop_)); }
  void digest_done(const protocol::file_version& v, const protocol::digest128& digest,
                   bool ok) override;
  void job_finished() noexcept override { schedule_serving(); }
  void accessed(const access_event& e) noexcept override { access_.record(e, uv_now(loop_)); }

  // outbox::watcher: datagrams started or stopped waiting for the socket.
  void queue_changed() noexcept override;

  uv_loop_t* loop_;  // unowned
  config cfg_;
  std::shared_ptr<shared_state> shared_;
  served_root root_;
  unique_fd socket_;
  const address_validator& validator_;  // in shared_
  shared_token_bucket& total_rate_;     // in shared_
  std::unique_ptr<uv_owned<uv_poll_t>> poll_;
  uv_owned<uv_idle_t> serve_idle_;    // runs while GETs wait and nothing else wakes the loop
  uv_owned<uv_timer_t> rate_timer_;   // wakes serving when a rate limit allows more
  uv_owned<uv_timer_t> prune_timer_;  // forgets idle clients
  bool rate_timer_armed_ = false;
  int poll_events_ = 0;
  uv_owned<uv_async_t> stop_async_;
  uv_owned<uv_async_t> counters_async_;
  std::function<void()> counters_done_;
  std::mutex stop_mutex_;  // guards both asyncs between request_*() and their closing
  bool stopping_ = false;
  struct stats stats_;

  udp_batch::receiver receiver_;  // every datagram is decoded from its slots, then dropped
  client_table clients_;
  scheduler scheduler_;
  file_cache files_;
  digest_cache digests_;
  outbox outbox_;
  key_gate gate_;
  reply_batch batch_;
  block_reader reader_;
  job_pool jobs_;
  std::shared_ptr<dir_cache> dirs_;  // shared with pool jobs
  access_log access_;
};

}  // namespace ferry::server
