#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "client/connection.hpp"
#include "client/part_file.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

struct fetch_options {
  std::uint32_t block_size = 0;  // 0: the largest that the path carries unfragmented
  clock::duration timeout = std::chrono::seconds{10};  // give up after this long without progress
  int max_restarts = 3;          // new versions of the file tolerated during one run
  std::uint32_t max_window = 0;  // 0: derived from the socket's receive buffer
  // Called about five times a second with (bytes done, total bytes); may be empty.
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
};

struct fetch_result {
  std::uint64_t size = 0;
  std::uint64_t bytes_fetched = 0;  // payload bytes received and written in this run
  std::uint64_t resumed_bytes = 0;  // already in OUT.part when this run started
  std::uint64_t requests = 0;
  std::uint64_t retransmits = 0;
  std::uint64_t duplicates = 0;  // replies for blocks already done
  std::uint64_t corrupt = 0;     // replies that failed to decode or to checksum
  int restarts = 0;
  std::uint32_t block_size = 0;
  double seconds = 0;
  protocol::digest128 digest;
};

// Chooses a block size: the caller's wish or, by default, the largest payload that fits the
// path MTU the kernel reports, capped by the server. Loopback therefore gets large blocks.
[[nodiscard]] std::uint32_t choose_block_size(const connection& conn, std::uint32_t wish,
                                              std::uint32_t server_cap) noexcept;

// STATs until the server has the file's digest, which it computes once per version.
// Throws failure on refusal or timeout.
[[nodiscard]] protocol::stat_reply stat_with_digest(connection& conn, const std::string& path,
                                                    clock::duration timeout);

// Fetches one remote file into `out`, through OUT.part, resuming what an earlier run left.
// Throws failure.
class fetcher {
 public:
  fetcher(connection& conn, std::string remote_path, std::filesystem::path out, fetch_options opt);
  fetch_result run();

 private:
  enum class outcome { running, complete, version_changed, block_cap_changed, error_reply, failed };
  struct flight {
    std::uint64_t index;
    clock::time_point sent;
    std::uint64_t seq;
  };

  outcome transfer(part_file& part, const protocol::file_version& version);
  void pump();
  void send_block(std::uint64_t index, bool retransmit);
  void on_reply(const codec::decoded_reply& r);
  void on_tick();
  void declare_lost(const flight& f, bool by_timeout);
  void finish(outcome o);

  connection& conn_;
  std::string path_;
  std::filesystem::path out_;
  fetch_options opt_;
  fetch_result stats_;

  // Per-transfer state, reset by transfer().
  part_file* part_ = nullptr;
  protocol::file_version version_;
  std::vector<std::uint8_t> in_flight_;                // outstanding requests per block
  std::unordered_map<std::uint64_t, flight> flights_;  // by request id
  std::deque<std::uint64_t> order_;                    // request ids in send order
  std::deque<std::uint64_t> retransmit_;               // block indexes to ask for again
  std::vector<protocol::file_version> stale_;          // versions given up on
  std::uint64_t scan_ = 0;                             // next block never asked for
  std::uint64_t seq_ = 0, first_id_ = 0;
  double cwnd_ = 16, ssthresh_ = 1e9;
  double prior_cwnd_ = 16, prior_ssthresh_ = 1e9;  // before the current recovery, for undo
  bool undone_ = false;                            // this recovery was already undone
  // Requests declared lost for the reorder threshold, not a timeout: an answer to one of them
  // proves the loss spurious, so the threshold grows and the window cut is undone.
  std::uint64_t reorder_threshold_ = 3;  // as QUIC's packet threshold (RFC 9002) to start
  std::unordered_map<std::uint64_t, std::uint64_t> lost_by_order_;  // request id -> its seq
  std::uint32_t max_window_ = 64;
  clock::time_point recovery_start_{}, last_progress_{}, last_flush_{}, last_backoff_{},
      last_report_{};
  outcome outcome_ = outcome::running;
  protocol::errc last_error_ = protocol::errc::ok;
  int errors_confirmed_away_ = 0;  // error replies that a STAT then contradicted
  std::exception_ptr error_;
};

}  // namespace ferry::client
