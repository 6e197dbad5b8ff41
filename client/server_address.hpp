#pragma once

// The user's "HOST[:PORT]" turned into the one address the commands use.

#include <string>

#include "client/connection.hpp"
#include "common/address.hpp"

namespace ferry::client {

// Resolves `text`. A name with several addresses (IPv6 and IPv4, say) has each asked at once
// for the served directory's STAT, and the first that answers is used, as curl tries every
// address of a name: a server that listens on one family only is still found, and an address
// that refuses (ICMP) is passed over at once. Throws failure(usage) on bad syntax, and
// failure(network) if the name does not resolve or no address answers within `timeout`.
[[nodiscard]] endpoint resolve_address(const std::string& text, clock::duration timeout);

}  // namespace ferry::client
