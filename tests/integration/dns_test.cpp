// Discovery from DNS against a real DNS server (dnsmasq on 127.0.0.1, support/dnsmasq): every
// A and AAAA record of a name, SRV targets in priority order with their ports, the bounds on a
// name with hundreds of records, and clear failures for a name that does not exist or a DNS
// server that does not answer, within the time given.

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "client/discovery.hpp"
#include "client/errors.hpp"
#include "common/address.hpp"
#include "common/unique_fd.hpp"
#include "support/dnsmasq.hpp"
#include "support/loopback.hpp"

namespace {

using ferry::client::discover;
using ferry::client::dns_options;
using ferry::client::exit_code;
using ferry::client::failure;
using ferry::client::found_server;
using ferry::client::max_found_servers;
using ferry::client::server_spec;
using ferry::test::dnsmasq;
using namespace std::chrono_literals;

std::set<std::string> addresses(const std::vector<found_server>& found) {
  std::set<std::string> out;
  for (const auto& f : found) out.insert(ferry::to_string(f.address));
  return out;
}

// The failure that discover() throws for `spec`; fails the test if it throws none.
failure failure_of(const server_spec& spec, const dns_options& dns,
                   std::chrono::milliseconds timeout = 3s) {
  try {
    (void)discover(spec, timeout, dns);
  } catch (const failure& f) {
    return f;
  }
  FAIL("discover() succeeded");
  return failure{exit_code::ok, ""};
}

}  // namespace

TEST_SUITE_BEGIN("dns");

TEST_CASE("a name's A and AAAA records are all servers, each with the port given") {
  // dnsmasq takes one address of each family a --host-record, and adds up records of one name.
  dnsmasq dns{{"--host-record=multi.ferry.test,127.0.0.11,::1",
               "--host-record=multi.ferry.test,127.0.0.12",
               "--host-record=multi.ferry.test,127.0.0.13"}};
  const dns_options opt{dns.server()};
  const auto found = discover({"multi.ferry.test", 7071, false}, 3s, opt);
  CHECK(addresses(found) == std::set<std::string>{"127.0.0.11:7071", "127.0.0.12:7071",
                                                  "127.0.0.13:7071", "[::1]:7071"});
  for (const auto& f : found) {
    CHECK(f.priority == 0);
    CHECK(f.via.empty());
  }
  // An address is taken as it is: DNS is not asked (this server knows no such name).
  const auto literal = discover({"127.0.0.9", 7070, false}, 3s, opt);
  REQUIRE(literal.size() == 1);
  CHECK(ferry::to_string(literal[0].address) == "127.0.0.9:7070");
}

TEST_CASE("SRV targets come lowest priority first, each at its own port") {
  dnsmasq dns{{"--host-record=a.ferry.test,127.0.0.21", "--host-record=b.ferry.test,127.0.0.22",
               "--host-record=c.ferry.test,127.0.0.23,::1",
               "--srv-host=_ferry._udp.group.ferry.test,b.ferry.test,7002,20,10",
               "--srv-host=_ferry._udp.group.ferry.test,a.ferry.test,7001,10,10",
               "--srv-host=_ferry._udp.group.ferry.test,c.ferry.test,7003,30,10"}};
  const auto found = discover({"group.ferry.test", 0, true}, 3s, dns_options{dns.server()});
  REQUIRE(found.size() == 4);
  CHECK(ferry::to_string(found[0].address) == "127.0.0.21:7001");
  CHECK(found[0].priority == 10);
  CHECK(found[0].via == "a.ferry.test:7001");
  CHECK(ferry::to_string(found[1].address) == "127.0.0.22:7002");
  CHECK(found[1].priority == 20);
  CHECK(addresses({found[2], found[3]}) == std::set<std::string>{"127.0.0.23:7003", "[::1]:7003"});
  CHECK(found[3].priority == 30);
}

TEST_CASE("a name with hundreds of records gives at most the bound, quickly") {
  std::vector<std::string> records{"--host-record=t.ferry.test,127.0.0.31"};
  for (int i = 0; i < 300; ++i)
    records.push_back(
        fmt::format("--host-record=many.ferry.test,127.1.{}.{}", i / 250, 1 + i % 250));
  for (int i = 0; i < 200; ++i)
    records.push_back(fmt::format("--srv-host=_ferry._udp.wide.ferry.test,t.ferry.test,{},{},1",
                                  10000 + i, i % 3));
  dnsmasq dns{records};
  const dns_options opt{dns.server()};
  const auto start = std::chrono::steady_clock::now();
  const auto a = discover({"many.ferry.test", 7070, false}, 5s, opt);
  CHECK(a.size() == max_found_servers);
  CHECK(addresses(a).size() == max_found_servers);
  const auto srv = discover({"wide.ferry.test", 0, true}, 5s, opt);
  REQUIRE(srv.size() == max_found_servers);
  // The lowest priorities are the ones kept: 67 records of priority 0 (a third of 200).
  CHECK(std::all_of(srv.begin(), srv.end(), [](auto& f) { return f.priority == 0; }));
  CHECK(std::chrono::steady_clock::now() - start < 4s);
}

TEST_CASE("a name that does not exist is a network failure that says so") {
  dnsmasq dns{{"--host-record=a.ferry.test,127.0.0.1"}};
  const dns_options opt{dns.server()};
  const auto a = failure_of({"nosuch.ferry.test", 7070, false}, opt);
  CHECK(a.code() == exit_code::network);
  CHECK(std::string{a.what()}.find("nosuch.ferry.test") != std::string::npos);
  CHECK(std::string{a.what()}.find("NXDOMAIN") != std::string::npos);
  const auto s = failure_of({"nosuch.ferry.test", 0, true}, opt);
  CHECK(s.code() == exit_code::network);
  CHECK(std::string{s.what()}.find("_ferry._udp.nosuch.ferry.test") != std::string::npos);
  // A name without SRV records has no ferry servers under srv+, though it has an address.
  const auto n = failure_of({"a.ferry.test", 0, true}, opt);
  CHECK(n.code() == exit_code::network);
  // An SRV target that does not resolve is named; none resolving is a failure.
  dnsmasq lone{{"--srv-host=_ferry._udp.gone.ferry.test,missing.ferry.test,7070,0,1"}};
  const auto g = failure_of({"gone.ferry.test", 0, true}, dns_options{lone.server()});
  CHECK(g.code() == exit_code::network);
  CHECK(std::string{g.what()}.find("missing.ferry.test") != std::string::npos);
}

TEST_CASE("a DNS server that does not answer ends the lookup within the time given") {
  // A socket that is bound and never read: every query is lost without a word.
  ferry::unique_fd silent{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  REQUIRE(silent);
  const dns_options dead{ferry::to_string(ferry::test::bind_loopback(silent.get()))};
  const auto start = std::chrono::steady_clock::now();
  const auto f = failure_of({"a.ferry.test", 7070, false}, dead, 1s);
  CHECK(f.code() == exit_code::network);
  CHECK(std::string{f.what()}.find("no answer from DNS within 1 s") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  const auto bad = failure_of({"a.ferry.test", 7070, false}, dns_options{"not an address"});
  CHECK(bad.code() == exit_code::usage);
}
