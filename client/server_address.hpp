#pragma once

// The user's ADDR (HOST[:PORT], [V6]:PORT, or srv+NAME) turned into the servers the commands use.

#include <string>
#include <vector>

#include "client/connection.hpp"
#include "common/address.hpp"

namespace ferry::client {

// Resolves `text` to the one server `ls` and `stat` ask. A name with several addresses (IPv6
// and IPv4, say), or an SRV name with several targets, has each asked at once for the served
// directory's STAT, and the first that answers is used, as curl tries every address of a name:
// a server that listens on one family only is still found, and an address that refuses (ICMP)
// is passed over at once. Of SRV targets, one of the lowest priority that answers wins.
// Throws failure(usage) on bad syntax, and failure(network) if the name does not resolve or no
// server answers within `timeout`.
[[nodiscard]] endpoint resolve_address(const std::string& text, clock::duration timeout);

// A server to fetch from, and its name in messages.
struct named_server {
  endpoint address;
  std::string name;
  // 0: used from the start. n > 0: an SRV target of a higher priority than those used, held
  // back; 1 for the next priority, 2 for the one after, and so on.
  int standby = 0;
};

// Every server that `texts` (ADDR, then each --mirror) stand for, for `get` and `sync` to use
// at once, in order. An ADDR that is one address is taken as it is (it may come up later). One
// that stands for several (a name's addresses, SRV targets) has them all asked for the STAT of
// the served directory at once, and those that answer (within a moment of the first) are used,
// of the lowest SRV priority among them. The SRV targets of higher priorities follow, as
// standby (to fall back on when those fail). Throws as resolve_address does.
[[nodiscard]] std::vector<named_server> resolve_sources(const std::vector<std::string>& texts,
                                                        clock::duration timeout);

}  // namespace ferry::client
