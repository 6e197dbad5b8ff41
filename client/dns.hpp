#pragma once

// DNS through c-ares on a libuv loop: c-ares' sockets are watched with uv_poll and its
// retransmissions driven by a uv_timer, so a lookup never blocks the loop it runs on.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "client/connection.hpp"
#include "common/address.hpp"

struct ares_channeldata;

namespace ferry::client {

// How lookups are made.
struct dns_options {
  // "IP[:PORT],..." (IPv6 in brackets when a port is given), as c-ares'
  // ares_set_servers_ports_csv takes it; empty: the system's, from /etc/resolv.conf.
  std::string servers;
  // Each query is sent again after this long without an answer, a few times; the caller bounds
  // the whole lookup with its own deadline (cancel_all).
  clock::duration query_timeout = std::chrono::seconds{1};
};

// One SRV record, as the answer gave it.
struct srv_record {
  std::string target;
  std::uint16_t port = 0;
  std::uint16_t priority = 0;
  std::uint16_t weight = 0;
};

// The outcome of one lookup: `error` empty on success. `not_found` when the name does not
// exist or has no record of the type asked (NXDOMAIN, NODATA); `timed_out` when no server
// answered.
struct dns_status {
  std::string error;
  bool not_found = false;
  bool timed_out = false;
  [[nodiscard]] bool ok() const noexcept { return error.empty(); }
};

// A c-ares channel whose sockets live on `loop`. Every callback is called once, from the loop
// (or from cancel_all / the destructor, with an error), and must not throw. Not thread-safe:
// use it on the loop's thread only.
class dns_resolver {
 public:
  // Throws failure(usage) if `opt.servers` is not a list c-ares takes, failure(internal) if
  // c-ares cannot start.
  dns_resolver(uv_loop_t* loop, const dns_options& opt);
  ~dns_resolver();
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  using addresses_fn = std::function<void(dns_status, std::vector<endpoint>)>;
  using srv_fn = std::function<void(dns_status, std::vector<srv_record>)>;

  // The IPv4 and IPv6 addresses of `host` (from /etc/hosts or DNS, as c-ares looks), each with
  // `port`, in c-ares' order of preference (RFC 6724), each once.
  void addresses(const std::string& host, std::uint16_t port, addresses_fn done);
  // The SRV records of `name`, in the order of the answer.
  void srv(const std::string& name, srv_fn done);
  // Ends every lookup in progress: each callback gets a "timed out" status.
  void cancel_all() noexcept;
  [[nodiscard]] std::size_t pending() const noexcept { return pending_; }

 private:
  struct watch;  // one c-ares socket's uv_poll
  static void on_sock_state(void* data, int fd, int readable, int writable) noexcept;
  void rearm() noexcept;

  uv_loop_t* loop_;
  ares_channeldata* channel_ = nullptr;
  uv_owned<uv_timer_t> timer_;
  std::vector<std::unique_ptr<watch>> watches_;
  std::size_t pending_ = 0;
};

}  // namespace ferry::client
