#pragma once

#include <cstddef>
#include <optional>
#include <span>

#include "common/address.hpp"
#include "common/envelope.hpp"
#include "server/allow_list.hpp"
#include "server/config.hpp"
#include "server/outbox.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// What may reach the request handlers, before anything is decoded. First the pre-shared key
// (ferryd --key-file): a request sealed with the key in the server's mode. A request that is
// recognisably ferry's but unsealed, or sealed in the other mode, is answered
// authentication_required (within the amplification `limit`); one whose seal does not check is
// dropped unanswered, since nothing in it can be believed. A server without a key answers a request
// sealed with a MAC the same way (its content is readable and checked), so a client with a key
// learns why it is not served; an encrypted one it cannot check, and drops. Then --allow: a source
// outside it is answered permission_denied (within `limit`) and served nothing. Loop thread only.
class gate {
 public:
  gate(const config& cfg, outbox& out, stats& counters);

  // The plain datagram to decode (`wire` opened in place, or `wire` itself without a key), or
  // nothing when the datagram was answered or dropped here. `cfg` must outlive this.
  [[nodiscard]] std::optional<std::span<std::byte>> admit(std::span<std::byte> wire,
                                                          const endpoint& peer,
                                                          std::size_t limit) noexcept;
  // What replies are sealed with: null without a key.
  [[nodiscard]] envelope::sealer* sealer() noexcept { return sealer_ ? &*sealer_ : nullptr; }
  [[nodiscard]] envelope::mode mode() const noexcept { return mode_; }

 private:
  // The key's part of admit().
  std::optional<std::span<std::byte>> open(std::span<std::byte> wire, const endpoint& peer,
                                           std::size_t limit) noexcept;
  // Answers authentication_required, sealed `as`, with `why`, if `plain` is a ferry request
  // of this version that its checksum shows undamaged; counts it in one counter either way.
  void answer(std::span<const std::byte> plain, const endpoint& peer, std::size_t limit,
              envelope::mode as, std::string_view why) noexcept;
  // Answers permission_denied if `plain` is a ferry request, whole; counts it either way.
  void deny(std::span<const std::byte> plain, const endpoint& peer, std::size_t limit) noexcept;

  std::optional<envelope::sealer> sealer_;
  envelope::mode mode_ = envelope::mode::plain;
  const allow_list& allow_;  // unowned
  outbox& out_;              // unowned
  stats& stats_;             // unowned
};

}  // namespace ferry::server
