#pragma once

// Servers on the LAN: ferry services (_ferry._udp) that avahi-daemon finds with DNS-SD, over
// D-Bus, and the `ferry discover` command that lists them.

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "client/connection.hpp"
#include "common/address.hpp"
#include "common/dnssd.hpp"

namespace ferry::client {

// The most services one browse resolves; more are left out, with a warning.
inline constexpr std::size_t max_dnssd_services = 256;

// One service of type _ferry._udp, as resolved on each interface and protocol it was seen on.
struct dnssd_service {
  std::string name;                     // the instance name
  std::string domain;                   // "local" on a LAN
  std::string host;                     // the host its SRV record names, e.g. "files.local"
  std::vector<endpoint> addresses;      // each with the service's port; at most max_found_servers
  std::vector<std::string> interfaces;  // where it was seen, e.g. "eth0"
  std::optional<dnssd::txt_info> txt;   // nullopt: not a ferry service, `why_not` says why
  std::string why_not;
};

// Browses the default domain for _ferry._udp through avahi-daemon and resolves what it finds
// (`only`: only the instances of that name): until avahi has said all it knows for now and
// every resolver has answered, or `timeout` has passed, whichever is first. Sorted by name.
// Throws failure(network) when avahi-daemon cannot be reached (not running, no system D-Bus).
[[nodiscard]] std::vector<dnssd_service> browse_services(clock::duration timeout,
                                                         const std::string& only = {});

// The servers "dnssd+NAME" stands for: every address of the ferry service NAME. Throws
// failure(network) when no such service answers within `timeout`, when it is not a ferry
// service, or when it speaks another protocol version.
[[nodiscard]] std::vector<endpoint> resolve_dnssd(const std::string& name, clock::duration timeout);

struct discover_options {
  double timeout_s = 5;
  bool json = false;
  bool terminal = false;  // names are quoted as for a terminal
};
// ferry discover: one line (or JSON object) per ferry service found.
void run_discover(const discover_options& o, std::ostream& out);

}  // namespace ferry::client
