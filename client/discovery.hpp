#pragma once

// Servers from DNS: every address of a name, or the targets of a name's _ferry._udp SRV
// records, ordered by priority and weight (RFC 2782), with bounds on all of it.

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "client/connection.hpp"
#include "client/dns.hpp"
#include "common/address.hpp"

namespace ferry::client {

// The most servers one ADDR stands for: addresses of a name, SRV targets, and the addresses of
// all of those together. What a name has beyond it is left out, with a warning.
inline constexpr std::size_t max_found_servers = 64;
// "srv+NAME" names the servers in NAME's SRV records of this service.
inline constexpr std::string_view srv_prefix = "srv+";
inline constexpr std::string_view srv_service = "_ferry._udp.";
// "dnssd+NAME" names the ferry service NAME that DNS-SD finds on the LAN (client/dnssd.hpp).
inline constexpr std::string_view dnssd_prefix = "dnssd+";

// What the user wrote as ADDR: HOST[:PORT], [V6]:PORT, srv+NAME or dnssd+NAME.
struct server_spec {
  std::string host;  // an address, a host name, (srv) the name under _ferry._udp, or (dnssd)
                     // the DNS-SD instance name
  std::uint16_t port = default_port;
  bool srv = false;
  bool dnssd = false;
};
// Parses `text`; nullopt with `why` set on bad syntax.
[[nodiscard]] std::optional<server_spec> parse_server_spec(std::string_view text, std::string& why);

// One server found for an ADDR.
struct found_server {
  endpoint address;
  std::uint16_t priority = 0;  // its SRV record's; 0 for an address of a name
  std::string via;             // the SRV target and port it came from; empty otherwise
};

// Orders SRV records as RFC 2782 asks a client to try them: lowest priority first; within a
// priority, a weighted random order (a record of weight 0 is tried first only by chance).
[[nodiscard]] std::vector<srv_record> order_srv(std::vector<srv_record> records,
                                                std::mt19937_64& rng);

// The DNS servers the user named in FERRY_DNS_SERVER ("IP[:PORT],..."); none: the system's.
[[nodiscard]] dns_options dns_from_environment();

// Every server `spec` names, in the order to prefer them, at most max_found_servers: an
// address as it is; a name's addresses in c-ares' order; an SRV name's targets in RFC 2782
// order, each with all its addresses. Runs on a loop of its own, all within `timeout`.
// Throws failure(network) when the name or the SRV records do not exist, nothing answers in
// time, or no target resolves; failure(usage) on a bad FERRY_DNS_SERVER.
[[nodiscard]] std::vector<found_server> discover(const server_spec& spec, clock::duration timeout,
                                                 const dns_options& dns);

}  // namespace ferry::client
