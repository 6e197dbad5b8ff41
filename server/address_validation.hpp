#pragma once

// Stateless address validation, as QUIC's Retry tokens (RFC 9000 section 8.1): a token is a MAC
// over the client's address, port and a time window, under a secret drawn when the server
// starts. Only a client that receives datagrams at its address can echo a valid one, so a
// spoofed source can be answered with no more than a small token reply. Tokens live seconds,
// and the server hands a live client a fresh one before its own expires: a token is proof that
// its holder received what the server sent it a moment ago, so requests captured and replayed
// later from the client's address draw only token replies.

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
  // How long one window lasts by default; a token is accepted in its own window and the next
  // one, so it lives between one and two windows: 2 to 4 seconds.
  static constexpr std::uint64_t default_window_ms = 2048;

  // Draws a fresh secret from the kernel (getrandom). Throws if it cannot.
  explicit address_validator(std::uint64_t window_ms = default_window_ms);

  [[nodiscard]] std::uint64_t window_ms() const noexcept { return window_ms_; }

  // The token for `peer` at monotonic time `now_ms`.
  [[nodiscard]] protocol::address_token issue(const sockaddr* peer, std::uint64_t now_ms) const;
  // True if `token` was issued by this validator for exactly this address and port, in the
  // current window or the one before.
  [[nodiscard]] bool valid(const protocol::address_token& token, const sockaddr* peer,
                           std::uint64_t now_ms) const noexcept;
  // True if `token` names the current window; an older one, though still valid, is due to be
  // replaced (this checks the window only: ask valid() first).
  [[nodiscard]] bool fresh(const protocol::address_token& token,
                           std::uint64_t now_ms) const noexcept;
  // True if a client that echoes `token`, and was last handed one at `last_sent_ms`, is due a
  // fresh one: its token is not of the current window, and it was handed none in the last
  // eighth of a window (so a lost one is soon replaced, and a burst of requests draws one).
  [[nodiscard]] bool refresh_due(const protocol::address_token& token, std::uint64_t last_sent_ms,
                                 std::uint64_t now_ms) const noexcept {
    return !fresh(token, now_ms) && now_ms >= last_sent_ms + window_ms_ / 8;
  }

 private:
  std::uint64_t window_ms_;
  // Two independent 64-bit SipHash outputs make the 128-bit MAC.
  std::array<std::uint64_t, 2> key_a_{}, key_b_{};
  void mac(std::uint32_t window, const sockaddr* peer, std::byte* out) const noexcept;
};

}  // namespace ferry::server
