#pragma once

#include <cstddef>
#include <optional>
#include <span>

#include "common/address.hpp"
#include "common/envelope.hpp"
#include "server/config.hpp"
#include "server/outbox.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// What the pre-shared key (ferryd --key-file) lets through, before anything is decoded: a
// request sealed with the key in the server's mode. A request that is recognisably ferry's but
// unsealed, or sealed in the other mode, is answered authentication_required (within the
// amplification `limit`); one whose seal does not check is dropped unanswered, since nothing in
// it can be believed. A server without a key answers a request sealed with a MAC the same way
// (its content is readable and checked), so a client with a key learns why it is not served;
// an encrypted one it cannot check, and drops. Loop thread only.
class key_gate {
 public:
  key_gate(const config& cfg, outbox& out, stats& counters);

  // The plain datagram to decode (`wire` opened in place, or `wire` itself without a key), or
  // nothing when the datagram was answered or dropped here.
  [[nodiscard]] std::optional<std::span<std::byte>> admit(std::span<std::byte> wire,
                                                          const endpoint& peer,
                                                          std::size_t limit) noexcept;
  // What replies are sealed with: null without a key.
  [[nodiscard]] envelope::sealer* sealer() noexcept { return sealer_ ? &*sealer_ : nullptr; }
  [[nodiscard]] envelope::mode mode() const noexcept { return mode_; }

 private:
  // Answers authentication_required, sealed `as`, with `why`, if `plain` is a ferry request
  // that its checksum shows undamaged.
  void answer(std::span<const std::byte> plain, const endpoint& peer, std::size_t limit,
              envelope::mode as, std::string_view why) noexcept;

  std::optional<envelope::sealer> sealer_;
  envelope::mode mode_ = envelope::mode::plain;
  outbox& out_;   // unowned
  stats& stats_;  // unowned
};

}  // namespace ferry::server
