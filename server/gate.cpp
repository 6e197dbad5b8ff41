#include "server/gate.hpp"

#include "common/codec.hpp"

namespace ferry::server {

using envelope::mode;

gate::gate(const config& cfg, outbox& out, stats& counters)
    : allow_{cfg.allow}, out_{out}, stats_{counters} {
  if (cfg.key) {
    sealer_.emplace(cfg.key);
    mode_ = cfg.encrypt ? mode::aead : mode::mac;
  }
}

std::optional<std::span<std::byte>> gate::admit(std::span<std::byte> wire, const endpoint& peer,
                                                std::size_t limit) noexcept {
  auto plain = open(wire, peer, limit);
  if (plain && !allow_.allows(peer.addr())) {
    deny(*plain, peer, limit);
    return std::nullopt;
  }
  return plain;
}

std::optional<std::span<std::byte>> gate::open(std::span<std::byte> wire, const endpoint& peer,
                                               std::size_t limit) noexcept {
  if (!sealer_) {
    const auto m = envelope::mode_of(wire);
    if (m == mode::plain) return wire;
    // Nothing here can open it. Under a MAC the request itself is readable, and its checksum
    // says whether it is whole: answered as any request is. An encrypted one is unreadable.
    if (m == mode::aead ||
        wire.size() < protocol::header_size + envelope::trailer_size(mode::mac)) {
      ++stats_.dropped_malformed;
      return std::nullopt;
    }
    auto inner = wire.first(wire.size() - envelope::trailer_size(mode::mac));
    envelope::clear_seal_flags(inner);
    answer(inner, peer, limit, mode::plain, "this server has no key: run ferry without --key-file");
    return std::nullopt;
  }
  auto o = sealer_->open(wire);
  switch (o.why) {
    case envelope::refusal::none:
      break;
    case envelope::refusal::plain:
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
    answer(o.plain, peer, limit, o.sealed_as,
           mode_ == mode::aead ? "this server encrypts: run ferry with --encrypt"
                               : "this server does not encrypt: run ferry without --encrypt");
    return std::nullopt;
  }
  return o.plain;
}

void gate::answer(std::span<const std::byte> plain, const endpoint& peer, std::size_t limit,
                  envelope::mode as, std::string_view why) noexcept {
  std::optional<protocol::header> header;
  auto decoded = codec::decode_request(plain, header);
  const auto* h = decoded ? &decoded->hdr : (header ? &*header : nullptr);
  // As for any datagram: damaged ones and what is not a request draw nothing, and a request of
  // another version learns only that (PROTOCOL.md, "Versions").
  if (decoded.error() == protocol::errc::corrupt) {
    ++stats_.dropped_corrupt;
    return;
  }
  if (h == nullptr || !protocol::is_request_type(static_cast<std::uint8_t>(h->type))) {
    ++stats_.dropped_malformed;
    return;
  }
  if (decoded.error() == protocol::errc::unsupported_version) {
    ++stats_.dropped_malformed;
    out_.send_error(peer, h->request_id, protocol::errc::unsupported_version, limit, mode::plain);
    return;
  }
  ++stats_.unauthenticated;
  out_.send_error(peer, h->request_id, protocol::errc::authentication_required, limit, as, why);
}

void gate::deny(std::span<const std::byte> plain, const endpoint& peer,
                std::size_t limit) noexcept {
  std::optional<protocol::header> header;
  auto decoded = codec::decode_request(plain, header);
  if (decoded.error() == protocol::errc::corrupt) {
    ++stats_.dropped_corrupt;  // damaged on the way: not even the address can be believed
    return;
  }
  // Told so (within the limit, as any unvalidated source), never served.
  ++stats_.denied;
  const auto* h = decoded ? &decoded->hdr : (header ? &*header : nullptr);
  if (h != nullptr && protocol::is_request_type(static_cast<std::uint8_t>(h->type)))
    out_.send_error(peer, h->request_id, protocol::errc::permission_denied, limit);
}

}  // namespace ferry::server
