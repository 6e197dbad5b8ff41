#pragma once

// Fixtures for the integration tests: a private directory tree (temp_dir), a ferry server on
// its own loop thread bound to 127.0.0.1:0 (running_server), and a blocking UDP client that
// speaks the wire protocol through ferry::codec (blocking_client).
//
// Everything here is used from the test thread only, except running_server::request_stop()
// and running_server::counters(), which may be called from any thread.

#include <doctest/doctest.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client/errors.hpp"
#include "common/address.hpp"
#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "common/result.hpp"
#include "server/udp_server.hpp"

namespace ferry::test {

using namespace std::chrono_literals;

// --- small helpers ----------------------------------------------------------------------------

// XXH3-128 of `bytes`, computed here (not through ferry's digest code) from xxhash.h directly.
[[nodiscard]] protocol::digest128 xxh3_128(std::string_view bytes) noexcept;

// `n` pseudo-random bytes from a seeded generator: the same seed always gives the same bytes.
[[nodiscard]] std::string random_bytes(std::size_t n, std::uint64_t seed);

// Appends the checksum that ends every datagram but a data block (PROTOCOL.md: XXH3-64 of all
// the bytes before it, little-endian), computed here with xxhash.h. Tests use it to build
// hostile datagrams that are damaged on purpose yet carry a matching checksum.
void append_checksum(std::vector<std::byte>& wire);
// Removes those last eight bytes again.
void strip_checksum(std::vector<std::byte>& wire);

// Polls `done` every millisecond until it returns true or `limit` passes. Returns its last answer.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s);

// The whole content of a local file. Fails the test if it cannot be read.
[[nodiscard]] std::string read_file(const std::filesystem::path& p);

// `n` distinct file names, 7 to 200 bytes long, already in bytewise order: a five-digit index,
// '_', then filler. The name of index i sorts before every name of a higher index.
[[nodiscard]] std::vector<std::string> varied_names(std::size_t n);

// A plain copy of every server counter, so two moments can be compared.
struct counter_values {
  std::uint64_t datagrams_in = 0, bytes_in = 0, datagrams_out = 0, bytes_out = 0;
  std::uint64_t list_requests = 0, stat_requests = 0, get_requests = 0;
  std::uint64_t dropped_malformed = 0, dropped_corrupt = 0, dropped_truncated = 0;
  std::uint64_t recv_errors = 0;
  std::uint64_t errors_sent = 0, busy_sent = 0, send_errors = 0, send_dropped = 0;
  std::uint64_t internal_errors = 0;
  std::uint64_t prefix_full = 0, clients_evicted = 0;
  std::uint64_t unauthenticated = 0, dropped_unauthenticated = 0;
  static counter_values of(const server::stats& s) noexcept;
};

// --- temp_dir --------------------------------------------------------------------------------

// A fresh directory made with mkdtemp under /tmp, removed with everything in it on destruction.
// Relative names are resolved against it; the helpers fail the test (REQUIRE) on any error.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] std::filesystem::path operator/(std::string_view rel) const { return path_ / rel; }

  // Creates or truncates `rel` and writes `content`.
  void write(std::string_view rel, std::string_view content) const;
  // Writes `size` seeded random bytes to `rel` and returns them.
  std::string write_random(std::string_view rel, std::size_t size, std::uint64_t seed) const;
  // Creates `rel` as a sparse file of `size` bytes (ftruncate), all holes.
  void write_sparse(std::string_view rel, std::uint64_t size) const;
  // Writes `content` at `offset` into the existing file `rel`, in place (no truncation).
  void write_at(std::string_view rel, std::uint64_t offset, std::string_view content) const;
  // Overwrites the existing file `rel` in place with `content` (same size, same inode) and
  // makes sure its mtime/ctime differ from before, so a server sees a new version even when
  // the write lands in the same clock tick as the previous change.
  void overwrite_in_place(std::string_view rel, std::string_view content) const;
  void mkdir(std::string_view rel) const;
  // Creates the symlink `rel` pointing at `target` (not checked, may dangle or escape).
  void symlink(std::string_view target, std::string_view rel) const;
  void mkfifo(std::string_view rel) const;
  // Binds a UNIX datagram socket at `rel`; the socket file stays after the socket is closed.
  void make_socket(std::string_view rel) const;
  void remove(std::string_view rel) const;
  // Creates directory `rel` holding one file for each name, file i holding i % 7 bytes.
  // The files are hard links to seven files, so thousands of them are made quickly.
  void populate(std::string_view rel, const std::vector<std::string>& names) const;
  // Creates `rel` as another hard link to the existing file `existing`.
  void hard_link(std::string_view existing, std::string_view rel) const;
  [[nodiscard]] std::string read(std::string_view rel) const { return read_file(path_ / rel); }
  [[nodiscard]] bool exists(std::string_view rel) const;

 private:
  std::filesystem::path path_;
};

// Everything observable about a tree except access times: type, mode, owner, size, inode,
// mtime, ctime, symlink targets and a hash of every regular file's content, keyed by relative
// path ("" is the root itself).
[[nodiscard]] std::map<std::string, std::string> describe_tree(const std::filesystem::path& root);
// Human-readable differences between two describe_tree() results; empty if they are equal.
[[nodiscard]] std::string tree_diff(const std::map<std::string, std::string>& before,
                                    const std::map<std::string, std::string>& after);

// --- running_server --------------------------------------------------------------------------

// A ferry::server::udp_server on a private uv_loop_t, bound to 127.0.0.1 port 0, with uv_run on
// its own std::thread. The destructor stops it, joins the thread, lets the close callbacks run
// and CHECKs that uv_loop_close() returns 0, i.e. that the server left no handle or request.
class running_server {
 public:
  using tweak = std::function<void(server::config&)>;

  // Serves `root`. `adjust` may change the config (max_block, max_jobs ...) before the server
  // is constructed; root, bind address and port are set first and may be overridden too.
  explicit running_server(const std::filesystem::path& root, const tweak& adjust = {});
  ~running_server();
  running_server(const running_server&) = delete;
  running_server& operator=(const running_server&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept { return endpoint_.port(); }
  [[nodiscard]] const ::ferry::endpoint& endpoint() const noexcept { return endpoint_; }
  // "127.0.0.1:PORT", as the client commands take it.
  [[nodiscard]] std::string address() const;
  [[nodiscard]] const server::stats& counters() const noexcept { return server_->counters(); }
  [[nodiscard]] counter_values counter_snapshot() const noexcept {
    return counter_values::of(server_->counters());
  }
  [[nodiscard]] const server::config& config() const noexcept { return config_; }

  // Thread-safe, and only the first call has an effect: asks the loop thread to stop the
  // server. The loop thread then exits once the last pending job has finished.
  void request_stop() noexcept;
  // request_stop(), then waits for the loop thread to exit.
  void stop_and_join();
  // True once the loop thread has returned from uv_run.
  [[nodiscard]] bool loop_exited() const noexcept { return exited_.load(); }

 private:
  server::config config_;
  uv_loop_t loop_{};
  std::unique_ptr<server::udp_server> server_;
  ::ferry::endpoint endpoint_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> exited_{false};
  std::thread thread_;
};

// --- blocking_client -------------------------------------------------------------------------

// A reply together with the datagram it was decoded from; a data reply's payload points into
// `wire`, so this type moves but never copies.
struct owned_reply {
  std::vector<std::byte> wire;
  codec::decoded_reply decoded;

  owned_reply() = default;
  owned_reply(owned_reply&&) noexcept = default;
  owned_reply& operator=(owned_reply&&) noexcept = default;
  owned_reply(const owned_reply&) = delete;
  owned_reply& operator=(const owned_reply&) = delete;
};

// One GET answer, payload copied out.
struct block {
  protocol::data_reply meta;  // meta.payload is reset to null; the bytes are in `data`
  std::string data;
};

// A plain UDP socket connected to one server. Requests are encoded with ferry::codec, replies
// decoded with codec::decode_reply. A request is sent again, with a fresh request id as the
// protocol asks, when no answer arrives within the receive timeout, up to `attempts` times;
// then the test fails.
class blocking_client {
 public:
  explicit blocking_client(const ::ferry::endpoint& server,
                           std::chrono::milliseconds timeout = 2000ms, int attempts = 3);
  ~blocking_client();
  blocking_client(const blocking_client&) = delete;
  blocking_client& operator=(const blocking_client&) = delete;

  // Error replies come back as the result's error code; any other unexpected reply type, or no
  // reply at all, fails the test.
  result<protocol::list_reply> list(const std::string& path, const std::string& cursor = {});
  result<protocol::stat_reply> stat(const std::string& path);
  result<block> get(const std::string& path, std::uint64_t offset, std::uint32_t block_size);

  // Sends `req` and returns the reply that carries the id of one of its transmissions.
  // Datagrams that carry another id are counted in stray() and skipped.
  owned_reply call(const protocol::request& req);

  // Encodes `req` with `id` into a datagram, without sending it and without a token: what a
  // client that was never validated, or a spoofer, sends.
  [[nodiscard]] static std::vector<std::byte> encode(
      std::uint64_t id, const protocol::request& req,
      const protocol::address_token* token = nullptr);
  // The same, with this client's address token, which it first asks the server for if it has
  // none yet: a request the server will answer.
  [[nodiscard]] std::vector<std::byte> encode_validated(std::uint64_t id,
                                                        const protocol::request& req);
  // The token the server gave this client, asking for one if there is none yet.
  const protocol::address_token& token();
  // Token replies call() received and acted on.
  [[nodiscard]] std::uint64_t token_replies() const noexcept { return token_replies_; }

  void send_raw(std::span<const std::byte> bytes);
  // Sends `bytes` as one UDP GSO send of `segment`-byte datagrams; false if the kernel cannot.
  [[nodiscard]] bool send_gso(std::span<const std::byte> bytes, std::uint16_t segment);
  // The next datagram, or nullopt if none arrives within the receive timeout (or `wait`).
  std::optional<std::vector<std::byte>> recv_raw();
  std::optional<std::vector<std::byte>> recv_raw(std::chrono::milliseconds wait);

  [[nodiscard]] std::uint64_t next_id() noexcept { return next_id_++; }
  // Datagrams received while waiting for an answer that were not that answer.
  [[nodiscard]] std::uint64_t stray() const noexcept { return stray_; }
  // Replies that did not decode at all.
  [[nodiscard]] std::uint64_t undecodable() const noexcept { return undecodable_; }
  // The wire size of the last answer call() returned.
  [[nodiscard]] std::size_t last_reply_size() const noexcept { return last_reply_size_; }
  // Times call() had to send a request again.
  [[nodiscard]] std::uint64_t retransmits() const noexcept { return retransmits_; }

 private:
  void set_timeout(std::chrono::milliseconds t);

  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  int attempts_;
  std::uint64_t next_id_ = 0x1000;
  std::uint64_t stray_ = 0, undecodable_ = 0, retransmits_ = 0, token_replies_ = 0;
  std::optional<protocol::address_token> token_;
  std::size_t last_reply_size_ = 0;
};

}  // namespace ferry::test

// Readable doctest output for the protocol's enums and structs.
namespace doctest {
template <>
struct StringMaker<ferry::protocol::errc> {
  static String convert(ferry::protocol::errc e);
};
template <>
struct StringMaker<ferry::protocol::entry_type> {
  static String convert(ferry::protocol::entry_type t);
};
template <>
struct StringMaker<ferry::protocol::digest128> {
  static String convert(const ferry::protocol::digest128& d);
};
template <>
struct StringMaker<ferry::protocol::file_version> {
  static String convert(const ferry::protocol::file_version& v);
};
template <>
struct StringMaker<ferry::client::exit_code> {
  static String convert(ferry::client::exit_code c);
};
}  // namespace doctest
