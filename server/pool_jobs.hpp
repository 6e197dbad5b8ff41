#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/address.hpp"
#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "server/access_log.hpp"
#include "server/client_table.hpp"
#include "server/file_ops.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// What a finished job may do, on the loop thread: the server's side that its jobs see.
class job_host {
 public:
  virtual void send_error(const endpoint& peer, std::uint64_t id, protocol::errc code) noexcept = 0;
  virtual void send_reply(const endpoint& peer, std::uint64_t id,
                          const protocol::reply& reply) noexcept = 0;
  // A block read off the loop; its bytes were charged to the rate limits when it was admitted.
  virtual void send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                          const read_outcome& r, const std::byte* payload) noexcept = 0;
  virtual void remember_file(const std::string& rel, std::shared_ptr<unique_fd> fd) = 0;
  virtual void finish_stat(const endpoint& peer, std::uint64_t id, stat_info& info) = 0;
  // The root itself was refused with `code`.
  virtual void root_refused(protocol::errc code) noexcept = 0;
  virtual void digest_done(const protocol::file_version& v, const protocol::digest128& digest,
                           bool ok) = 0;
  // What the access log counts of a job that answered.
  virtual void accessed(const access_event& e) noexcept = 0;
  // A job ended (done or not): what waited for it may go on.
  virtual void job_finished() noexcept = 0;

 protected:
  ~job_host() = default;
};

// Work for libuv's thread pool. run() executes on a pool thread and touches only the job's own
// members; done() executes on the loop thread.
class pool_job {
 public:
  virtual ~pool_job() = default;
  virtual void run() noexcept = 0;
  virtual void done(job_host& host) = 0;
  // Called instead of done() when the job was cancelled or the server is stopping.
  virtual void dropped(job_host&) noexcept {}
  // What the access log counts the job's request as, if anything.
  [[nodiscard]] virtual std::optional<access_op> logged_as() const noexcept { return std::nullopt; }
  // Makes it the answer to request `id` of client `c`, counted against that client's jobs.
  void for_client(const client_state& c, std::uint64_t id, std::string path) {
    peer = c.peer;
    request_id = id;
    rel = std::move(path);
    has_client = true;
    client = c.key;
  }

  endpoint peer;
  std::uint64_t request_id = 0;
  std::string rel;
  bool counts_as_digest = false;
  bool has_client = false;  // counts against a client's max_client_jobs
  peer_key client;
  std::size_t buffer_bytes = 0;  // of a block buffer it holds, for stats::held_peak

 private:
  friend class job_pool;
  uv_work_t req_{};
  class job_pool* pool_ = nullptr;
};

// Reads one block that the page cache could not give at once.
class get_job final : public pool_job {
 public:
  void run() noexcept override;
  void done(job_host& host) override;
  [[nodiscard]] std::optional<access_op> logged_as() const noexcept override {
    return access_op::get;
  }

  int root_fd = -1;
  std::uint64_t offset = 0;
  std::uint32_t block = 0;
  std::shared_ptr<unique_fd> file;  // null: open it first
  bool opened = false;
  std::unique_ptr<std::byte[]> buffer;
  read_outcome outcome;
};

class stat_job final : public pool_job {
 public:
  void run() noexcept override { info = stat_beneath(root_fd, rel); }
  void done(job_host& host) override;
  [[nodiscard]] std::optional<access_op> logged_as() const noexcept override {
    return access_op::stat;
  }

  int root_fd = -1;
  result<stat_info> info{protocol::errc::io_error};
};

// One page of a listing, from the shared cache of directory snapshots.
class list_job final : public pool_job {
 public:
  void run() noexcept override;
  void done(job_host& host) override;
  [[nodiscard]] std::optional<access_op> logged_as() const noexcept override {
    return access_op::list;
  }

  int root_fd = -1;
  std::string cursor;
  std::size_t page_bytes = protocol::max_small_reply;  // less the seal's trailer, if any
  std::shared_ptr<dir_cache> dirs;
  result<protocol::list_reply> page{protocol::errc::io_error};
};

// The digest of a whole file, kept only if the file did not change while it was read.
class digest_job final : public pool_job {
 public:
  void run() noexcept override;
  void done(job_host& host) override { host.digest_done(version, digest, ok); }
  void dropped(job_host& host) noexcept override;

  unique_fd fd;
  protocol::file_version version;
  protocol::digest128 digest;
  bool ok = false;
};

// Hands jobs to libuv's thread pool within bounds: max_jobs in all, max_client_jobs a client,
// max_digest_jobs digests. A job refused is answered busy. Loop thread only.
class job_pool {
 public:
  struct limits {
    std::size_t max_jobs = 64;
    std::size_t max_client_jobs = 32;
    std::size_t max_digest_jobs = 2;
  };
  job_pool(uv_loop_t* loop, job_host& host, client_table& clients, limits l,
           stats& counters) noexcept
      : loop_{loop}, host_{host}, clients_{clients}, limits_{l}, stats_{counters} {}

  // Queues `job`; false if a bound or libuv refused it.
  bool submit(std::unique_ptr<pool_job> job) noexcept;
  // True if another digest may start now.
  [[nodiscard]] bool digest_room() const noexcept { return digests_ < limits_.max_digest_jobs; }
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_; }
  [[nodiscard]] std::size_t buffer_bytes() const noexcept { return bytes_; }
  // From now on, finished jobs are dropped, not done.
  void stop() noexcept { stopping_ = true; }

 private:
  void finished(std::unique_ptr<pool_job> job, int status) noexcept;
  // Answers busy to the request the job was for, and logs it.
  void refuse_busy(const pool_job& job) noexcept;

  uv_loop_t* loop_;        // unowned
  job_host& host_;         // unowned
  client_table& clients_;  // unowned
  limits limits_;
  stats& stats_;  // unowned
  std::size_t in_flight_ = 0;
  std::size_t digests_ = 0;
  std::size_t bytes_ = 0;  // block buffers of the jobs in flight
  bool stopping_ = false;
};

}  // namespace ferry::server
