#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "client/congestion.hpp"
#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/flight_table.hpp"
#include "client/part_file.hpp"
#include "client/rack.hpp"
#include "client/request_engine.hpp"
#include "client/task.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

struct fetch_options {
  std::uint32_t block_size = 0;  // 0: the largest that the path carries unfragmented
  clock::duration timeout = std::chrono::seconds{10};  // give up after this long without progress
  int max_restarts = 3;  // new versions of the file tolerated during one run
  // Blocks one GET-RUN may ask for; 1 sends a GET for every block.
  std::uint16_t max_run = protocol::max_run_blocks;
  std::uint32_t max_window = 0;  // blocks in flight at most per server; 0: congestion control's
                                 // own cap (128 MiB)
  // >= 0: the file goes to this descriptor (standard output) in order as it arrives, through a
  // temporary part file whose written part is given back; nothing is kept for a rerun.
  int stream_fd = -1;
  bool keep_mtime = true;  // the output gets the remote file's mtime
  // The output gets the remote file's permission bits, exactly (no umask) but never setuid,
  // setgid or sticky (local_mode); false: it is created 0644 less the umask.
  bool keep_mode = true;
  bool replace = true;  // an existing output is replaced; false: it fails at the end instead
  // Called about five times a second with (bytes done, total bytes); may be empty.
  std::function<void(std::uint64_t, std::uint64_t)> on_progress;
};

// What one server contributed to a fetch.
struct source_result {
  std::string address;
  std::uint64_t bytes = 0;     // payload bytes it delivered that were kept
  std::uint64_t requests = 0;  // blocks asked of it
  std::uint64_t retransmits = 0;
  std::uint64_t duplicates = 0;
  int suspensions = 0;  // times it fell silent and its blocks went to the others
  std::string state;    // "live", "silent" or "dropped" at the end
};

struct fetch_result {
  std::uint64_t size = 0;
  std::uint16_t mode = 0;           // the remote file's permission bits, as the server said
  std::uint64_t bytes_fetched = 0;  // payload bytes received and written in this run
  std::uint64_t resumed_bytes = 0;  // already in OUT.part when this run started
  std::uint64_t requests = 0;       // blocks asked for
  std::uint64_t datagrams = 0;      // GETs and GET-RUNs that asked for them
  std::uint64_t retransmits = 0;
  std::uint64_t duplicates = 0;  // replies for blocks already done
  std::uint64_t corrupt = 0;     // replies that failed to decode or to checksum
  int restarts = 0;
  std::uint32_t block_size = 0;
  double seconds = 0;
  protocol::digest128 digest;
  std::vector<source_result> sources;  // in the order given, the first being the primary
};

// The permission bits a local copy of a remote file with `remote_mode` gets: the server's, less
// setuid, setgid and sticky, which a client never takes from a server's say-so.
[[nodiscard]] constexpr std::uint16_t local_mode(std::uint16_t remote_mode) noexcept {
  return static_cast<std::uint16_t>(remote_mode & 0777);
}

// Chooses a block size: the caller's wish or, by default, the largest payload that fits the
// path MTU the kernel reports, capped by the server. Loopback therefore gets large blocks.
[[nodiscard]] std::uint32_t choose_block_size(const connection& conn, std::uint32_t wish,
                                              std::uint32_t server_cap) noexcept;

// The next block size to try on a path that drops datagrams of `block` bytes silently: the
// largest that any IPv6 path carries, then the smallest the protocol allows.
[[nodiscard]] std::uint32_t smaller_block(std::uint32_t block, int family) noexcept;

// STATs until the server has the file's digest, which it computes once per version.
// Throws failure on refusal or timeout.
task<protocol::stat_reply> stat_with_digest(request_engine& engine, connection& conn,
                                            std::string path, clock::duration timeout);
// The same on a loop of its own: for a caller that runs no loop.
[[nodiscard]] protocol::stat_reply stat_with_digest(connection& conn, const std::string& path,
                                                    clock::duration timeout);

// Fetches one remote file into `out`, through OUT.part, resuming what an earlier run left.
// With several sources (connections on one loop, the first being the primary), blocks come
// from all of them at once: each has its own RTT estimate and window, so a faster source is
// asked for more; a silent one is set aside and probed; the last blocks are asked of a second
// source too. Every source must serve the same size and digest. Throws failure.
class fetcher {
 public:
  fetcher(connection& conn, std::string remote_path, std::filesystem::path out, fetch_options opt);
  fetcher(std::vector<connection*> sources, std::string remote_path, std::filesystem::path out,
          fetch_options opt);
  // The whole fetch as one task on the engine's loop.
  task<fetch_result> fetch(request_engine& engine);
  // The same, running the sources' loop until it ends.
  fetch_result run();

 private:
  enum class outcome {
    running,
    complete,
    version_changed,
    block_cap_changed,
    error_reply,
    path_too_small,  // no block arrives: try smaller ones
    failed
  };
  enum class source_state { live, silent, dropped };
  // One server: its own congestion state and requests in flight; the blocks are shared.
  struct source {
    connection* conn = nullptr;
    protocol::file_version version;  // tags differ between servers holding equal copies
    bool verified = false;           // its size and digest were seen to match
    source_state state = source_state::live;
    flight_table flights;
    std::uint64_t in_flight_bytes = 0;
    std::optional<congestion> cc;  // made by transfer(), once the block size is known
    rack loss;
    // Requests declared lost, by id: true if by RACK, whose loss an answer then proves
    // spurious (the reordering window widens); false if by a timeout.
    std::unordered_map<std::uint64_t, bool> lost_by_order;
    std::uint64_t seq = 0, first_id = 0;
    double pace_tokens = 0;               // pacing: bytes that may be asked for now (see may_send)
    clock::time_point next_tail_probe{};  // the earliest time for the next tail loss probe
    clock::time_point pace_at{};
    clock::time_point last_backoff{}, last_heard{}, next_probe{};
    bool runs = true;             // it takes GET-RUN; false once it refused one (an older server)
    std::uint64_t probe_key = 0;  // the exchange that asks a silent source whether it is back
    bool probing = false;
    source_result result;
  };

  task<outcome> transfer(part_file& part);
  void pump();
  enum class pump_result {
    sent,     // a request went out
    waiting,  // it waits for room in the window to ask for a run
    nothing   // no block left to ask this source for
  };
  pump_result pump_source(source& s);
  // Asks `s` for `count` blocks from `index` on, with one GET or GET-RUN.
  void send_blocks(source& s, std::uint64_t index, std::uint16_t count, bool retransmit);
  void on_reply(source& s, const codec::decoded_reply& r) noexcept;
  void handle_reply(source& s, const codec::decoded_reply& r);
  // Asks a silent source, through the engine, whether it is back.
  void probe(source& s, clock::time_point now);
  void on_probe_reply(source& s, const protocol::reply& body);
  void on_tick();
  // The failure for --timeout passed without a block delivered.
  [[nodiscard]] failure no_progress() const;
  void trace(const source& s) const;  // the path model, at debug level
  // Takes request `id` out of flight as lost, by order (RACK) or by a timeout, and tells
  // congestion control.
  void declare_lost(source& s, std::uint64_t id, bool by_order);
  // The accounting of a request that left flight unanswered: its block is asked for again.
  void release(source& s, const flight& f);
  // Whether block `index` is neither done nor asked for anywhere.
  [[nodiscard]] bool wanted(std::uint64_t index) const noexcept {
    return !part_->is_done(index) && in_flight_[index] == 0;
  }
  // The other blocks of a GET-RUN whose head drew a token or "malformed": the server queued
  // none of them, so they go to be asked again, and count as no loss.
  void retire_run(source& s, std::uint64_t head_id, std::uint16_t length);
  // Declares lost, oldest first, the requests RACK says are; returns how many.
  std::size_t detect_losses(source& s, clock::time_point now);
  void start_congestion(source& s);
  // Whether the window and the pacing let `s` send now; refills its pacing tokens.
  [[nodiscard]] bool may_send(source& s, clock::time_point now) noexcept;
  void set_aside(source& s, source_state state);
  void drop(source& s, outcome why, const std::string& message);
  [[nodiscard]] std::size_t usable_sources() const noexcept;
  [[nodiscard]] bool endgame_pick(const source& s, std::uint64_t& index) const;
  [[nodiscard]] bool tail_pick(source& s, std::uint64_t& index);
  // Whether the part file holds no whole block (the short last one aside).
  [[nodiscard]] bool no_whole_block_done() const noexcept;
  void finish(outcome o);
  // Writes the blocks stored from the last batch of replies; a failure ends the transfer.
  void write_blocks() noexcept;
  // Where a stream's temporary part file goes: $TMPDIR, or /tmp.
  [[nodiscard]] static std::filesystem::path stream_temp_dir();
  // Writes to opt_.stream_fd what has arrived in order since the last call. Throws
  // failure(local_io) if it cannot.
  void stream_out();
  // part.restart(), unless the file goes to a stream that already holds bytes of the old
  // version (or, if `data_bad`, bad bytes): that cannot be taken back, so it throws.
  void restart_part(part_file& part, const protocol::file_version& version, std::uint32_t block,
                    bool data_bad = false);
  // Sends the GETs that pump() queued.
  void flush_requests() noexcept;

  // Multi-source set-up: STATs every source at once for its size and digest, and refuses a
  // source that differs from the reference (the primary, or the first to answer). Later, drops
  // such a source instead. Returns the reference's STAT, with the smallest block cap.
  task<protocol::stat_reply> establish();
  // STATs the one source, which must serve a regular file.
  task<protocol::stat_reply> stat_primary();
  [[nodiscard]] failure mismatch(const source& s, const protocol::stat_reply& st,
                                 const source& ref) const;

  std::vector<source> sources_;
  request_engine* engine_ = nullptr;  // while fetch() runs
  std::optional<gate> done_;          // opened when a transfer ends
  std::string path_;
  std::filesystem::path out_;
  fetch_options opt_;
  fetch_result stats_;

  // Per-transfer state, reset by transfer().
  part_file* part_ = nullptr;
  std::uint64_t expected_size_ = 0;
  std::optional<protocol::digest128> expected_digest_;  // known in advance with several sources
  std::vector<std::uint8_t> in_flight_;                 // outstanding requests per block
  std::deque<std::uint64_t> retransmit_;                // block indexes to ask for again
  std::vector<protocol::file_version> stale_;           // versions given up on
  std::uint64_t scan_ = 0;                              // next block never asked for
  std::uint64_t streamed_ = 0;                          // bytes written to opt_.stream_fd
  std::vector<std::byte> stream_buf_;
  std::size_t next_source_ = 0;  // where pump() starts, for fairness
  clock::time_point last_progress_{}, last_flush_{}, last_report_{}, last_trace_{};
  outcome outcome_ = outcome::running;
  bool heard_since_progress_ = false;  // any reply came since the last block
  // Starts the clock of --timeout without progress afresh.
  void mark_progress() noexcept;
  bool busy_since_progress_ = false;  // only "busy" came back since the last block
  bool full_block_seen_ = false;      // a block of the full size came back in this transfer
  int silent_timeouts_ = 0;           // timeouts before any did
  clock::time_point transfer_started_{};
  protocol::errc last_error_ = protocol::errc::ok;
  int errors_confirmed_away_ = 0;  // error replies that a STAT then contradicted
  std::exception_ptr error_;
};

}  // namespace ferry::client
