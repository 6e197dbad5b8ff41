#pragma once

// A real DNS server for the discovery tests: Debian's dnsmasq, started on 127.0.0.1 at a free
// port with only the records a test gives it (no /etc/hosts, no upstream, no config file),
// under `timeout` so that it ends even if the test does not, and stopped by its PID.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ferry::test {

class dnsmasq {
 public:
  // `records`: dnsmasq options such as "--host-record=a.ferry.test,127.0.0.1" or
  // "--srv-host=_ferry._udp.g.ferry.test,a.ferry.test,7070,0,10". Names under ferry.test that
  // are not given are answered NXDOMAIN. Fails the test (REQUIRE) when dnsmasq is missing or
  // does not start.
  explicit dnsmasq(const std::vector<std::string>& records);
  ~dnsmasq();
  dnsmasq(const dnsmasq&) = delete;
  dnsmasq& operator=(const dnsmasq&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  // "127.0.0.1:PORT", as FERRY_DNS_SERVER takes it.
  [[nodiscard]] std::string server() const;

 private:
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace ferry::test
