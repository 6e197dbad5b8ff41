#include "common/codec.hpp"

#include <cstring>

#include "common/byte_order.hpp"
#include "common/wire_archive.hpp"
#include "common/xxh3_wide.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::codec {
namespace {

using protocol::errc;
using protocol::msg_type;
using wire::codec_error;
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

// --- field helpers: every length is bounded before anything is allocated -------------------

void save_string(out_archive& ar, const std::string& s, std::size_t max) {
  if (s.size() > max) throw codec_error{errc::bad_request};
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(s.size())));
  ar(cereal::binary_data(s.data(), s.size()));
}

void load_string(in_archive& ar, std::string& s, std::size_t max) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if (n > max) throw codec_error{errc::malformed};
  s.resize(static_cast<std::size_t>(n));
  ar(cereal::binary_data(s.data(), s.size()));
}

// bool and enums travel as one byte and are range-checked, so no invalid bool or enum value
// is ever materialised from the wire.
void save_u8(out_archive& ar, std::uint8_t v) { ar(v); }
std::uint8_t load_u8(in_archive& ar, std::uint8_t max) {
  std::uint8_t v = 0;
  ar(v);
  if (v > max) throw codec_error{errc::malformed};
  return v;
}
bool load_bool(in_archive& ar) { return load_u8(ar, 1) != 0; }

void save_version(out_archive& ar, const protocol::file_version& v) {
  ar(v.dev, v.ino, v.size, v.mtime_ns, v.ctime_ns);
}
void load_version(in_archive& ar, protocol::file_version& v) {
  ar(v.dev, v.ino, v.size, v.mtime_ns, v.ctime_ns);
}

constexpr std::uint8_t max_entry_type = static_cast<std::uint8_t>(protocol::entry_type::other);
// errc::corrupt is never sent.
constexpr std::uint8_t max_errc = static_cast<std::uint8_t>(errc::bad_request);

// --- bodies ------------------------------------------------------------------------------

void save_body(out_archive& ar, const protocol::list_request& m) {
  save_string(ar, m.path, protocol::max_path);
  save_string(ar, m.cursor, protocol::max_name);
}
void load_body(in_archive& ar, protocol::list_request& m) {
  load_string(ar, m.path, protocol::max_path);
  load_string(ar, m.cursor, protocol::max_name);
}

void save_body(out_archive& ar, const protocol::stat_request& m) {
  save_string(ar, m.path, protocol::max_path);
}
void load_body(in_archive& ar, protocol::stat_request& m) {
  load_string(ar, m.path, protocol::max_path);
}

// Every block of a run must start at an offset a u64 holds.
bool valid_run(std::uint64_t offset, std::uint32_t block, std::uint16_t count) {
  return block != 0 && count >= 1 && count <= protocol::max_run_blocks &&
         offset <= UINT64_MAX - std::uint64_t{count - 1u} * block;
}

void save_body(out_archive& ar, const protocol::get_request& m) {
  if (!valid_run(m.offset, m.block_size, m.count)) throw codec_error{errc::bad_request};
  save_string(ar, m.path, protocol::max_path);
  ar(m.offset, m.block_size);
  if (m.count > 1) ar(m.count);
}
// A GET-RUN carries its count; a plain GET is a run of one.
void load_body(in_archive& ar, protocol::get_request& m, bool run) {
  load_string(ar, m.path, protocol::max_path);
  ar(m.offset, m.block_size);
  m.count = 1;
  if (run) {
    ar(m.count);
    if (m.count < 2) throw codec_error{errc::bad_request};
  }
  if (!valid_run(m.offset, m.block_size, m.count)) throw codec_error{errc::bad_request};
}

void save_body(out_archive& ar, const protocol::list_reply& m) {
  if (m.entries.size() > protocol::max_list_entries) throw codec_error{errc::bad_request};
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(m.entries.size())));
  for (const auto& e : m.entries) {
    if (!protocol::valid_entry_name(e.name) || static_cast<std::uint8_t>(e.type) > max_entry_type)
      throw codec_error{errc::bad_request};
    save_string(ar, e.name, protocol::max_name);
    save_u8(ar, static_cast<std::uint8_t>(e.type));
    ar(e.size, e.mtime_ns);
  }
  save_u8(ar, m.end ? 1 : 0);
}
void load_body(in_archive& ar, protocol::list_reply& m) {
  cereal::size_type n = 0;
  ar(cereal::make_size_tag(n));
  if (n > protocol::max_list_entries) throw codec_error{errc::malformed};
  m.entries.resize(static_cast<std::size_t>(n));
  for (auto& e : m.entries) {
    load_string(ar, e.name, protocol::max_name);
    // A hostile server must not be able to name "../x" or "a/b" in a listing.
    if (!protocol::valid_entry_name(e.name)) throw codec_error{errc::malformed};
    e.type = static_cast<protocol::entry_type>(load_u8(ar, max_entry_type));
    ar(e.size, e.mtime_ns);
  }
  m.end = load_bool(ar);
}

void save_body(out_archive& ar, const protocol::stat_reply& m) {
  if (static_cast<std::uint8_t>(m.type) > max_entry_type ||
      m.max_block < protocol::min_block_size || m.max_block > protocol::max_block_size)
    throw codec_error{errc::bad_request};
  save_u8(ar, static_cast<std::uint8_t>(m.type));
  ar(m.size, m.mtime_ns);
  save_version(ar, m.version);
  ar(m.max_block);
  save_u8(ar, m.digest_ready ? 1 : 0);
  ar(m.digest.high, m.digest.low);
}
void load_body(in_archive& ar, protocol::stat_reply& m) {
  m.type = static_cast<protocol::entry_type>(load_u8(ar, max_entry_type));
  ar(m.size, m.mtime_ns);
  load_version(ar, m.version);
  ar(m.max_block);
  if (m.max_block < protocol::min_block_size || m.max_block > protocol::max_block_size)
    throw codec_error{errc::malformed};
  m.digest_ready = load_bool(ar);
  ar(m.digest.high, m.digest.low);
}

// A block must lie inside the file, and eof must say exactly whether it ends there. Written so
// that no sum can wrap around 2^64.
bool block_consistent(std::uint64_t offset, std::uint64_t length, bool eof, std::uint64_t size) {
  if (length > size || offset > size - length) return false;
  return eof == (offset == size - length);
}

// The fields of a data reply before its checksum.
void save_data_fields(out_archive& ar, const protocol::data_reply& m) {
  if (m.length > protocol::max_block_size ||
      !block_consistent(m.offset, m.length, m.eof, m.version.size))
    throw codec_error{errc::bad_request};
  ar(m.offset);
  save_u8(ar, m.eof ? 1 : 0);
  save_version(ar, m.version);
}

// The checksum of a data reply: XXH3-64 of the payload, seeded with XXH3-64 of every byte of
// the datagram before the checksum field, so it covers the header, the fields and the payload
// while the payload is read only once.
std::uint64_t data_checksum(std::span<const std::byte> before, std::span<const std::byte> payload) {
  const auto seed = XXH3_64bits(before.data(), before.size());
  return ferry::detail::xxh3_64_seeded(payload.data(), payload.size(), seed);
}

// A data reply up to its payload: the fields, the checksum over everything before it and the
// payload, and the payload's size tag. The payload follows, or goes out as a buffer of its own.
void save_data_prefix(out_archive& ar, std::span<const std::byte> before_fields,
                      const protocol::data_reply& m, std::span<const std::byte> payload) {
  save_data_fields(ar, m);
  const auto before = std::span{before_fields.data(), before_fields.size() + ar.written()};
  ar(data_checksum(before, payload));
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(m.length)));
}

// The payload is the rest of the datagram, exactly, and its checksum is checked before any
// field is believed to say where it goes.
void load_body(in_archive& ar, protocol::data_reply& m, std::span<const std::byte> before_fields) {
  ar(m.offset);
  m.eof = load_bool(ar);
  load_version(ar, m.version);
  const auto before = std::span{before_fields.data(), before_fields.size() + ar.consumed()};
  std::uint64_t sum = 0;
  cereal::size_type n = 0;
  ar(sum, cereal::make_size_tag(n));
  if (n > protocol::max_block_size || n != ar.remaining()) throw codec_error{errc::malformed};
  m.length = static_cast<std::uint32_t>(n);
  m.payload = ar.take(m.length);
  if (data_checksum(before, {m.payload, m.length}) != sum) throw codec_error{errc::corrupt};
  if (!block_consistent(m.offset, m.length, m.eof, m.version.size))
    throw codec_error{errc::malformed};
}

void save_body(out_archive& ar, const protocol::token_reply& m) {
  ar(cereal::binary_data(m.token.data(), m.token.size()));
}
void load_body(in_archive& ar, protocol::token_reply& m) {
  ar(cereal::binary_data(m.token.data(), m.token.size()));
}

void save_body(out_archive& ar, const protocol::error_reply& m) {
  if (static_cast<std::uint8_t>(m.code) > max_errc) throw codec_error{errc::bad_request};
  save_u8(ar, static_cast<std::uint8_t>(m.code));
  save_string(ar, m.message, protocol::max_message);
}
void load_body(in_archive& ar, protocol::error_reply& m) {
  m.code = static_cast<errc>(load_u8(ar, max_errc));
  load_string(ar, m.message, protocol::max_message);
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

result<decoded_reply> decode_reply(std::span<const std::byte> wire) noexcept {
  if (wire.size() > protocol::max_datagram) return errc::malformed;
  auto h = decode_header(wire);
  if (!h) return h.error();
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
