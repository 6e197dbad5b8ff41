#pragma once

// Test sockets on 127.0.0.1 at a port the kernel picks, and the wake-up of the threads that
// serve them.

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "common/address.hpp"

namespace ferry::test {

// Binds the IPv4 UDP socket `fd` to 127.0.0.1:0 and returns the address it got.
inline ::ferry::endpoint bind_loopback(int fd) {
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) == 0);
  return ::ferry::endpoint::from(reinterpret_cast<const sockaddr*>(&bound));
}

// Adds one to the eventfd `fd`, which wakes the thread polling it so that it stops. If the write
// failed, that thread, and the destructor joining it, would wait forever: abort instead.
inline void wake(int fd) noexcept {
  const std::uint64_t one = 1;
  if (::write(fd, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) std::abort();
}

}  // namespace ferry::test
