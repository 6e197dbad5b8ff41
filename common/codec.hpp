#pragma once

// The one decoding layer for untrusted bytes, and the matching encoders.
// Decoders are noexcept: they bound every length before allocating, reject trailing bytes
// and map every failure to an errc. Only codec.cpp includes cereal.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "common/protocol.hpp"
#include "common/result.hpp"

namespace ferry::codec {

struct decoded_request {
  protocol::header hdr;
  protocol::request body;
};

struct decoded_reply {
  protocol::header hdr;
  protocol::reply body;  // a data_reply's payload points into the decoded span
};

// Parses only the fixed header. errc::malformed if it is not a ferry datagram at all,
// errc::unsupported_version if it is one of another protocol version.
[[nodiscard]] result<protocol::header> decode_header(std::span<const std::byte> wire) noexcept;

// The request id of a datagram at least header_size long, whatever its version.
[[nodiscard]] std::uint64_t peek_request_id(std::span<const std::byte> wire) noexcept;

[[nodiscard]] result<decoded_request> decode_request(std::span<const std::byte> wire) noexcept;
// The same, and on failure `header` holds what could be read of the fixed header (of any
// version), so that an error can be answered without parsing the datagram again. It stays
// empty when the datagram is not recognisably a ferry request: no magic, or longer than any
// request can be (nothing of such a datagram is read).
[[nodiscard]] result<decoded_request> decode_request(
    std::span<const std::byte> wire, std::optional<protocol::header>& header) noexcept;

// Decodes a reply. Every datagram carries a checksum over all of its bytes: a mismatch is
// errc::corrupt, anything else wrong is errc::malformed.
[[nodiscard]] result<decoded_reply> decode_reply(std::span<const std::byte> wire) noexcept;

// Encoders write into `out` and return the bytes used, or errc::bad_request if the message
// does not fit or breaks a limit the decoder would enforce.
// A request carries `token` (flag_token) if it is not null.
[[nodiscard]] result<std::size_t> encode_request(
    std::span<std::byte> out, std::uint64_t request_id, const protocol::request& body,
    const protocol::address_token* token = nullptr) noexcept;
[[nodiscard]] result<std::size_t> encode_reply(std::span<std::byte> out, std::uint64_t request_id,
                                               const protocol::reply& body) noexcept;

// Encodes a data reply up to its payload, so the payload can go out as a second buffer without
// a copy. The checksum is computed over `payload`; `meta.payload` is ignored.
[[nodiscard]] result<std::size_t> encode_data_prefix(std::span<std::byte> out,
                                                     std::uint64_t request_id,
                                                     const protocol::data_reply& meta,
                                                     std::span<const std::byte> payload) noexcept;

// Wire size of an error reply whose message is `message_length` bytes long.
[[nodiscard]] constexpr std::size_t error_reply_size(std::size_t message_length) noexcept {
  return protocol::header_size + 1 + 1 + 8 + message_length + protocol::checksum_size;
}

// Wire size of a list reply with no entries, and what each entry adds to it.
inline constexpr std::size_t list_reply_base_size =
    protocol::header_size + 1 + 8 + 1 + protocol::checksum_size;
[[nodiscard]] constexpr std::size_t list_entry_wire_size(std::size_t name_length,
                                                         std::size_t target_length = 0) noexcept {
  return 8 + name_length + 1 + 8 + 8 + 2 + 8 + target_length;
}
// The largest entry fits a page on its own.
static_assert(list_reply_base_size +
                  list_entry_wire_size(protocol::max_name, protocol::max_link_target) <=
              protocol::max_small_reply);

}  // namespace ferry::codec
