#pragma once

// Stateless address validation, as QUIC's Retry tokens (RFC 9000 section 8.1): a token is a MAC
// over the client's address, port and a time window, under a secret drawn when the server
// starts. Only a client that receives datagrams at its address can echo a valid one, so a
// spoofed source can be answered with no more than a small token reply.

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "common/address.hpp"
#include "common/protocol.hpp"

namespace ferry::server {

// SipHash-2-4 (Aumasson and Bernstein), a PRF for short inputs under a 128-bit key.
[[nodiscard]] std::uint64_t siphash24(const std::array<std::uint64_t, 2>& key,
                                      std::span<const std::byte> in) noexcept;

class address_validator {
 public:
  // How long one window lasts; a token is accepted in its own window and the next one, so it
  // lives between one and two windows.
  static constexpr std::uint64_t window_ms = 1024 * 1000;

  // Draws a fresh secret from the kernel (getrandom). Throws if it cannot.
  address_validator();

  // The token for `peer` at monotonic time `now_ms`.
  [[nodiscard]] protocol::address_token issue(const sockaddr* peer, std::uint64_t now_ms) const;
  // True if `token` was issued by this validator for exactly this address and port, in the
  // current window or the one before.
  [[nodiscard]] bool valid(const protocol::address_token& token, const sockaddr* peer,
                           std::uint64_t now_ms) const noexcept;

 private:
  // Two independent 64-bit SipHash outputs make the 128-bit MAC.
  std::array<std::uint64_t, 2> key_a_{}, key_b_{};
  void mac(std::uint32_t window, const sockaddr* peer, std::byte* out) const noexcept;
};

}  // namespace ferry::server
