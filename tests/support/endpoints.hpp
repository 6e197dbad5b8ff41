#pragma once

// IPv4 endpoints for tests that need an address but no socket.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>

#include "common/address.hpp"

namespace ferry::test {

// `addr` in host order, e.g. 0x7f000001 for 127.0.0.1.
inline endpoint v4(std::uint32_t addr, std::uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(addr);
  sin.sin_port = htons(port);
  return endpoint::from(reinterpret_cast<const sockaddr*>(&sin));
}

}  // namespace ferry::test
