#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/address.hpp"
#include "common/envelope.hpp"
#include "common/protocol.hpp"
#include "server/address_validation.hpp"
#include "server/allow_list.hpp"
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
  // The networks served (--allow); empty: every address. Others get permission_denied.
  allow_list allow;
  // The pre-shared key (--key-file), or null: with one, every datagram both ways is sealed with
  // a MAC, and also encrypted if `encrypt` (--encrypt).
  std::shared_ptr<const envelope::key> key;
  bool encrypt = false;
  // Where one line per finished transfer or listing goes: a file, or (empty) the log at info.
  std::string access_log;
  std::string bind = "127.0.0.1";
  // --announce: publish the server with DNS-SD through avahi-daemon (server/announce.hpp), under
  // announce_name (empty: "ROOT on HOST").
  bool announce = false;
  std::string announce_name;
  std::uint16_t port = default_port;             // 0 takes a free port
  unsigned workers = 1;                          // loops, each with its own socket; 0: one per core
  port_sharing share_port = port_sharing::none;  // any: --reuseport
  std::uint32_t max_block = protocol::max_block_size;
  std::size_t max_jobs = 64;              // queued file-system jobs; beyond: errc::busy
  std::size_t max_digest_jobs = 2;        // whole-file digests computed at once
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
  // How long an address token's window lasts (it lives one to two); tests shorten it.
  std::uint64_t token_window_ms = address_validator::default_window_ms;
};

// What the workers of one process share (ferryd --workers): the address-validation secret, so
// that a token from one worker is valid at every other when the kernel moves a client, and the
// --max-rate bucket, so that the limit holds for the process. Immutable or locked.
struct shared_state {
  explicit shared_state(const config& cfg)
      : validator{cfg.token_window_ms}, total_rate{cfg.max_rate, 0} {}
  const address_validator validator;
  shared_token_bucket total_rate;
};

}  // namespace ferry::server
