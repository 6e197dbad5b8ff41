#include "server/key_gate.hpp"

#include "common/codec.hpp"

namespace ferry::server {

using envelope::mode;

key_gate::key_gate(const config& cfg, outbox& out, stats& counters) : out_{out}, stats_{counters} {
  if (cfg.key) {
    sealer_.emplace(cfg.key);
    mode_ = cfg.encrypt ? mode::aead : mode::mac;
  }
}

std::optional<std::span<std::byte>> key_gate::admit(std::span<std::byte> wire, const endpoint& peer,
                                                    std::size_t limit) noexcept {
  if (!sealer_) {
    const auto m = envelope::mode_of(wire);
    if (m == mode::plain) return wire;
    // Nothing here can open it. Only under a MAC is the request itself readable, and so
    // checkable: answered if it decodes, as any error is; an encrypted one is dropped unanswered.
    ++stats_.dropped_malformed;
    if (m == mode::mac && wire.size() > envelope::tag_size) {
      auto inner = wire.first(wire.size() - envelope::tag_size);
      inner[7] &= ~std::byte{envelope::flag_mac | envelope::flag_aead};
      answer(inner, peer, limit, mode::plain,
             "this server has no key: run ferry without --key-file");
    }
    return std::nullopt;
  }
  auto o = sealer_->open(wire);
  switch (o.why) {
    case envelope::refusal::none:
      break;
    case envelope::refusal::plain:
      ++stats_.unauthenticated;
      answer(wire, peer, limit, mode::plain, "this server needs a key: run ferry with --key-file");
      return std::nullopt;
    case envelope::refusal::forged:
    case envelope::refusal::too_short:
      ++stats_.dropped_unauthenticated;  // another key, or altered: not even its id is sure
      return std::nullopt;
  }
  if (o.sealed_as != mode_) {
    // Sealed with the right key, so the answer is sealed as the request was: the client can
    // believe it and say which switch to change.
    ++stats_.unauthenticated;
    answer(o.plain, peer, limit, o.sealed_as,
           mode_ == mode::aead ? "this server encrypts: run ferry with --encrypt"
                               : "this server does not encrypt: run ferry without --encrypt");
    return std::nullopt;
  }
  return o.plain;
}

void key_gate::answer(std::span<const std::byte> plain, const endpoint& peer, std::size_t limit,
                      envelope::mode as, std::string_view why) noexcept {
  std::optional<protocol::header> header;
  auto decoded = codec::decode_request(plain, header);
  const auto* h = decoded ? &decoded->hdr : (header ? &*header : nullptr);
  // As for any error: only to what is recognisably a request and not damaged on the way.
  if (h == nullptr || !protocol::is_request_type(static_cast<std::uint8_t>(h->type)) ||
      decoded.error() == protocol::errc::corrupt)
    return;
  out_.send_error(peer, h->request_id, protocol::errc::authentication_required, limit, as, why);
}

}  // namespace ferry::server
