#include "common/codec.hpp"

#include <cstring>

#include "common/byte_order.hpp"
#include "common/message_bodies.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::codec {
namespace {

using protocol::errc;
using protocol::msg_type;
using wire::codec_error;
using wire::load_body;
using wire::save_body;
using wire::save_data_prefix;
// Every message, GET and DATA included, is written and read through these two archives.
using out_archive = wire::span_output_archive;
using in_archive = wire::span_input_archive;
static_assert(sizeof(cereal::size_type) == 8);

// Only requests carry a token; in a reply the flag means nothing.
bool carries_token(const protocol::header& h) {
  return h.has_token() && protocol::is_request_type(static_cast<std::uint8_t>(h.type));
}

// Bytes before the body: the fixed header, then the token if the flags say there is one.
std::size_t header_length(const protocol::header& h) {
  return protocol::header_size + (carries_token(h) ? protocol::token_size : 0);
}

// Writes the header (and token, if any) and returns its length. The header is big-endian.
std::size_t write_header(std::span<std::byte> out, msg_type type, std::uint64_t request_id,
                         const protocol::address_token* token) {
  const auto length = protocol::header_size + (token != nullptr ? protocol::token_size : 0);
  if (out.size() < length) throw codec_error{errc::bad_request};
  for (std::size_t i = 0; i < protocol::magic.size(); ++i) out[i] = std::byte{protocol::magic[i]};
  out[4] = std::byte{protocol::version};
  out[5] = std::byte{static_cast<std::uint8_t>(type)};
  bytes::put_be(&out[6], std::uint16_t{token != nullptr ? protocol::flag_token : std::uint16_t{0}});
  bytes::put_be(&out[8], request_id);
  if (token != nullptr) std::memcpy(&out[protocol::header_size], token->data(), token->size());
  return length;
}

msg_type type_of(const protocol::request& r) {
  static constexpr msg_type types[] = {msg_type::list_request, msg_type::stat_request,
                                       msg_type::get_request};
  if (auto* g = std::get_if<protocol::get_request>(&r); g && g->count > 1)
    return msg_type::get_run_request;
  return types[r.index()];
}
msg_type type_of(const protocol::reply& r) {
  static constexpr msg_type types[] = {msg_type::list_reply, msg_type::stat_reply,
                                       msg_type::data_reply, msg_type::error_reply,
                                       msg_type::token_reply};
  return types[r.index()];
}

// Writes one whole message. Every message but a data reply ends with XXH3-64 of all the bytes
// before it; a data reply carries data_checksum() ahead of its payload.
template <typename Body>
result<std::size_t> encode_any(std::span<std::byte> out, std::uint64_t request_id, const Body& body,
                               const protocol::address_token* token = nullptr) noexcept {
  try {
    const auto head = write_header(out, type_of(body), request_id, token);
    out_archive ar{out.subspan(head)};
    std::visit(
        [&](const auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, protocol::data_reply>) {
            save_data_prefix(ar, out.first(head), m, {m.payload, m.length});
            if (m.length > 0) ar(cereal::binary_data(m.payload, m.length));
          } else {
            save_body(ar, m);
            const auto w = out.first(head + ar.written());
            ar(static_cast<std::uint64_t>(XXH3_64bits(w.data(), w.size())));
          }
        },
        body);
    return head + ar.written();
  } catch (const codec_error& e) {
    return e.code;
  } catch (...) {
    return errc::bad_request;
  }
}

// Decodes the body that follows a valid header. `make` picks the message for the type.
template <typename Variant, typename Make>
result<Variant> decode_body(std::span<const std::byte> wire, const protocol::header& h, Make make) {
  // Every message but a data reply ends with a checksum of all that precedes it. It is checked
  // before any other byte is believed, so a damaged datagram is always errc::corrupt, and a
  // server answers nothing that failed it. Too short to hold one counts as damaged too.
  const bool data = h.type == msg_type::data_reply;
  const auto head = header_length(h);
  std::span<const std::byte> fields;
  if (!data) {
    const auto n = wire.size();
    if (n < protocol::header_size + 1 + protocol::checksum_size) throw codec_error{errc::corrupt};
    const auto sum = bytes::get_le<std::uint64_t>(&wire[n - protocol::checksum_size]);
    if (XXH3_64bits(wire.data(), n - protocol::checksum_size) != sum)
      throw codec_error{errc::corrupt};
    // Only now is the token flag believed: a flag with no room for its token is malformed.
    if (n - protocol::checksum_size < head + 1) throw codec_error{errc::malformed};
    fields = wire.subspan(head, n - protocol::checksum_size - head);
  } else {
    if (wire.size() < head + 1) throw codec_error{errc::malformed};
    fields = wire.subspan(head);
  }
  in_archive ar{fields};
  Variant body = make();
  std::visit(
      [&](auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, protocol::get_request>)
          load_body(ar, m, h.type == msg_type::get_run_request);
        else if constexpr (std::is_same_v<T, protocol::data_reply>)
          load_body(ar, m, wire.first(head));
        else
          load_body(ar, m);
      },
      body);
  if (ar.remaining() != 0) throw codec_error{errc::malformed};
  return body;
}

}  // namespace

namespace {
// Reads the fixed header into `h`, whatever its version: malformed if it is not a ferry
// datagram at all (`h` untouched), unsupported_version if it is one of another version.
errc read_header(std::span<const std::byte> wire, std::optional<protocol::header>& h) noexcept {
  if (wire.size() < protocol::header_size) return errc::malformed;
  for (std::size_t i = 0; i < protocol::magic.size(); ++i)
    if (wire[i] != std::byte{protocol::magic[i]}) return errc::malformed;
  auto& out = h.emplace();
  out.type = static_cast<msg_type>(std::to_integer<std::uint8_t>(wire[5]));
  out.flags = bytes::get_be<std::uint16_t>(&wire[6]);
  out.request_id = bytes::get_be<std::uint64_t>(&wire[8]);
  if (std::to_integer<std::uint8_t>(wire[4]) != protocol::version) return errc::unsupported_version;
  // A token too short for the datagram is left zero here; decode_body rejects the datagram.
  if (carries_token(out) && wire.size() >= protocol::header_size + protocol::token_size)
    std::memcpy(out.token.data(), &wire[protocol::header_size], protocol::token_size);
  return errc::ok;
}
}  // namespace

result<protocol::header> decode_header(std::span<const std::byte> wire) noexcept {
  std::optional<protocol::header> h;
  if (const auto e = read_header(wire, h); e != errc::ok) return e;
  return *h;
}

std::uint64_t peek_request_id(std::span<const std::byte> wire) noexcept {
  return wire.size() >= protocol::header_size ? bytes::get_be<std::uint64_t>(&wire[8]) : 0;
}

result<decoded_request> decode_request(std::span<const std::byte> wire) noexcept {
  std::optional<protocol::header> header;
  return decode_request(wire, header);
}

result<decoded_request> decode_request(std::span<const std::byte> wire,
                                       std::optional<protocol::header>& header) noexcept {
  header.reset();
  if (wire.size() > protocol::max_request_size) return errc::malformed;
  if (const auto e = read_header(wire, header); e != errc::ok) return e;
  const auto* h = &*header;
  try {
    auto body = decode_body<protocol::request>(wire, *h, [&]() -> protocol::request {
      switch (h->type) {
        case msg_type::list_request:
          return protocol::list_request{};
        case msg_type::stat_request:
          return protocol::stat_request{};
        case msg_type::get_request:
        case msg_type::get_run_request:
          return protocol::get_request{};
        default:
          throw codec_error{errc::malformed};
      }
    });
    return decoded_request{*h, std::move(*body)};
  } catch (const codec_error& e) {
    return e.code;
  } catch (...) {
    return errc::malformed;
  }
}

namespace {
// A reply of another protocol version is unreadable, but for one: the error that says that the
// server speaks another version. Its layout (an error reply's fields and trailing checksum) is
// the same in every version, so a client can tell its user why no answer comes.
result<decoded_reply> other_version_reply(std::span<const std::byte> wire,
                                          const protocol::header& h) noexcept {
  if (h.type != msg_type::error_reply) return errc::unsupported_version;
  try {
    auto body = decode_body<protocol::reply>(wire, h, [] { return protocol::error_reply{}; });
    if (std::get<protocol::error_reply>(*body).code != errc::unsupported_version)
      return errc::unsupported_version;
    return decoded_reply{h, std::move(*body)};
  } catch (...) {
    return errc::unsupported_version;  // damaged, or not that error: unreadable, as any other
  }
}
}  // namespace

result<decoded_reply> decode_reply(std::span<const std::byte> wire) noexcept {
  if (wire.size() > protocol::max_datagram) return errc::malformed;
  std::optional<protocol::header> header;
  if (const auto e = read_header(wire, header); e != errc::ok) {
    if (e == errc::unsupported_version) return other_version_reply(wire, *header);
    return e;
  }
  const auto h = &*header;
  try {
    auto body = decode_body<protocol::reply>(wire, *h, [&]() -> protocol::reply {
      switch (h->type) {
        case msg_type::list_reply:
          return protocol::list_reply{};
        case msg_type::stat_reply:
          return protocol::stat_reply{};
        case msg_type::data_reply:
          return protocol::data_reply{};
        case msg_type::error_reply:
          return protocol::error_reply{};
        case msg_type::token_reply:
          return protocol::token_reply{};
        default:
          throw codec_error{errc::malformed};
      }
    });
    return decoded_reply{*h, std::move(*body)};
  } catch (const codec_error& e) {
    return e.code == errc::bad_request ? errc::malformed : e.code;
  } catch (...) {
    return errc::malformed;
  }
}

result<std::size_t> encode_request(std::span<std::byte> out, std::uint64_t request_id,
                                   const protocol::request& body,
                                   const protocol::address_token* token) noexcept {
  auto n = encode_any(out, request_id, body, token);
  if (n && *n > protocol::max_request_size) return errc::bad_request;
  return n;
}

result<std::size_t> encode_reply(std::span<std::byte> out, std::uint64_t request_id,
                                 const protocol::reply& body) noexcept {
  return encode_any(out, request_id, body);
}

result<std::size_t> encode_data_prefix(std::span<std::byte> out, std::uint64_t request_id,
                                       const protocol::data_reply& meta,
                                       std::span<const std::byte> payload) noexcept {
  if (payload.size() != meta.length || out.size() < protocol::data_reply_overhead)
    return errc::bad_request;
  try {
    const auto head = write_header(out, msg_type::data_reply, request_id, nullptr);
    out_archive ar{out.subspan(head, protocol::data_reply_overhead - head)};
    save_data_prefix(ar, out.first(head), meta, payload);
    return head + ar.written();
  } catch (const codec_error& e) {
    return e.code;
  } catch (...) {
    return errc::bad_request;
  }
}

}  // namespace ferry::codec
