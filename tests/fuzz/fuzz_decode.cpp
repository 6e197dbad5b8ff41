// libFuzzer target over every decoder in common/codec.hpp. Whatever the bytes, decoding must not
// crash, leak or reach undefined behaviour (the sanitizers watch that), and whatever decodes
// must survive the round trip: encoding the decoded value gives back the input exactly, up to
// the flags field (which version 1 receivers ignore and encoders write as zero) and the
// checksum that covers it, and that encoding decodes to an equal value again.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace proto = ferry::protocol;
namespace codec = ferry::codec;
using proto::errc;
using proto::msg_type;

// The input as an encoder writes it: flags zero and the checksum recomputed.
std::vector<std::byte> normalised(std::span<const std::byte> wire, bool token) {
  std::vector<std::byte> out{wire.begin(), wire.end()};
  out[6] = std::byte{0};
  out[7] = token ? std::byte{proto::flag_token} : std::byte{0};
  ferry::fuzz::reseal(reinterpret_cast<std::uint8_t*>(out.data()), out.size());
  return out;
}

bool equal_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

// Field-wise equality; the protocol's message types do not define operator==.
bool same(const proto::list_request& a, const proto::list_request& b) {
  return a.path == b.path && a.cursor == b.cursor;
}
bool same(const proto::stat_request& a, const proto::stat_request& b) { return a.path == b.path; }
bool same(const proto::get_request& a, const proto::get_request& b) {
  return a.path == b.path && a.offset == b.offset && a.block_size == b.block_size &&
         a.count == b.count;
}
bool same(const proto::list_reply& a, const proto::list_reply& b) {
  return a.entries == b.entries && a.end == b.end;
}
bool same(const proto::stat_reply& a, const proto::stat_reply& b) {
  return a.type == b.type && a.size == b.size && a.mtime_ns == b.mtime_ns && a.mode == b.mode &&
         a.version == b.version && a.max_block == b.max_block && a.digest_ready == b.digest_ready &&
         a.digest == b.digest;
}
bool same(const proto::data_reply& a, const proto::data_reply& b) {
  return a.offset == b.offset && a.eof == b.eof && a.version == b.version && a.length == b.length &&
         (a.length == 0 || std::memcmp(a.payload, b.payload, a.length) == 0);
}
bool same(const proto::error_reply& a, const proto::error_reply& b) {
  return a.code == b.code && a.message == b.message;
}
bool same(const proto::token_reply& a, const proto::token_reply& b) { return a.token == b.token; }
template <typename Variant>
bool same_body(const Variant& a, const Variant& b) {
  return a.index() == b.index() &&
         std::visit([&](const auto& x) { return same(x, std::get<std::decay_t<decltype(x)>>(b)); },
                    a);
}

// The header type that goes with a body. A new message type must be added here (and to same()
// and make_corpus), which the asserts enforce.
static_assert(std::variant_size_v<proto::request> == 3 && std::variant_size_v<proto::reply> == 5);
template <typename Body>
msg_type type_of(const Body& body) {
  if constexpr (std::is_same_v<Body, proto::request>) {
    // A GET of several blocks is a GET-RUN.
    if (const auto* g = std::get_if<proto::get_request>(&body); g && g->count > 1)
      return msg_type::get_run_request;
    return std::array{msg_type::list_request, msg_type::stat_request,
                      msg_type::get_request}[body.index()];
  } else
    return std::array{msg_type::list_reply, msg_type::stat_reply, msg_type::data_reply,
                      msg_type::error_reply, msg_type::token_reply}[body.index()];
}

// What PROTOCOL.md says of a listing name, checked here independently of the decoder.
bool valid_name(std::string_view n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == n.npos && n.find('\0') == n.npos &&
         n.size() <= proto::max_name;
}

// Encodes the decoded message `d` into `out` and checks the round trip: the encoding is the
// input's bytes, normalised, and it decodes to an equal message. Returns the encoding.
template <typename Decoded, typename Encode, typename Decode>
std::span<const std::byte> round_trip(std::span<const std::byte> wire, const Decoded& d,
                                      std::vector<std::byte>& out, Encode encode, Decode decode) {
  // Only a request carries a token; the flag in a reply means nothing and is written as zero.
  const bool token = std::is_same_v<Decoded, codec::decoded_request> && d.hdr.has_token();
  const auto n = encode(out, d.hdr, d.body);
  FERRY_FUZZ_CHECK(n, "a datagram that decodes does not encode");
  const auto encoded = std::span<const std::byte>{out}.first(*n);
  FERRY_FUZZ_CHECK(equal_bytes(encoded, normalised(wire, token)),
                   "a datagram re-encodes to other bytes");
  const auto again = decode(encoded);
  FERRY_FUZZ_CHECK(again, "a re-encoded datagram does not decode");
  FERRY_FUZZ_CHECK(
      again->hdr.type == d.hdr.type && again->hdr.flags == (token ? proto::flag_token : 0) &&
          again->hdr.request_id == d.hdr.request_id && (!token || again->hdr.token == d.hdr.token),
      "a re-encoded datagram has another header");
  FERRY_FUZZ_CHECK(same_body(again->body, d.body),
                   "a re-encoded datagram decodes to another value");
  return encoded;
}

void check_request(std::span<const std::byte> wire, const codec::decoded_request& d) {
  FERRY_FUZZ_CHECK(d.hdr.type == type_of(d.body), "header type and body disagree");
  FERRY_FUZZ_CHECK(wire.size() <= proto::max_request_size, "an oversized request decoded");
  if (const auto* get = std::get_if<proto::get_request>(&d.body)) {
    FERRY_FUZZ_CHECK(get->block_size > 0, "a GET of zero bytes decoded");
    FERRY_FUZZ_CHECK(get->count >= 1 && get->count <= proto::max_run_blocks,
                     "a GET-RUN of a count out of range decoded");
  }

  std::vector<std::byte> out(proto::max_request_size);
  round_trip(
      wire, d, out,
      [](std::span<std::byte> o, const proto::header& h, const proto::request& b) {
        return codec::encode_request(o, h.request_id, b, h.has_token() ? &h.token : nullptr);
      },
      [](std::span<const std::byte> w) { return codec::decode_request(w); });
}

void check_reply_contract(std::span<const std::byte> wire, const codec::decoded_reply& d) {
  if (const auto* list = std::get_if<proto::list_reply>(&d.body)) {
    FERRY_FUZZ_CHECK(list->entries.size() <= proto::max_list_entries, "too many entries");
    // The server sizes its pages with these two constants, so they must match the encoding.
    std::size_t size = codec::list_reply_base_size;
    for (const auto& e : list->entries) {
      FERRY_FUZZ_CHECK(valid_name(e.name), "a listing name PROTOCOL.md forbids decoded");
      size += codec::list_entry_wire_size(e.name.size(), e.target.size());
    }
    FERRY_FUZZ_CHECK(size == wire.size(), "list_entry_wire_size disagrees with the encoding");
  } else if (const auto* stat = std::get_if<proto::stat_reply>(&d.body)) {
    FERRY_FUZZ_CHECK(
        stat->max_block >= proto::min_block_size && stat->max_block <= proto::max_block_size,
        "a stat with max_block out of range decoded");
  } else if (const auto* data = std::get_if<proto::data_reply>(&d.body)) {
    const auto size = data->version.size;
    FERRY_FUZZ_CHECK(data->length <= proto::max_block_size, "an oversized block decoded");
    FERRY_FUZZ_CHECK(data->length <= size && data->offset <= size - data->length,
                     "a block outside its file decoded");
    FERRY_FUZZ_CHECK(data->eof == (data->offset == size - data->length),
                     "a block whose eof disagrees with its file decoded");
    FERRY_FUZZ_CHECK(wire.size() == proto::data_reply_overhead + data->length,
                     "a block's payload is not the rest of the datagram");
  } else if (const auto* error = std::get_if<proto::error_reply>(&d.body)) {
    FERRY_FUZZ_CHECK(error->code != errc::corrupt && error->message.size() <= proto::max_message,
                     "an error reply out of range decoded");
  }
}

void check_reply(std::span<const std::byte> wire, const codec::decoded_reply& d) {
  FERRY_FUZZ_CHECK(d.hdr.type == type_of(d.body), "header type and body disagree");
  check_reply_contract(wire, d);

  std::vector<std::byte> out(proto::max_datagram);
  const auto encoded = round_trip(
      wire, d, out,
      [](std::span<std::byte> o, const proto::header& h, const proto::reply& b) {
        return codec::encode_reply(o, h.request_id, b);
      },
      codec::decode_reply);
  if (const auto* data = std::get_if<proto::data_reply>(&d.body)) {
    // The server sends a block as a prefix and the payload in place: the same bytes.
    std::array<std::byte, proto::data_reply_overhead> prefix{};
    const auto p =
        codec::encode_data_prefix(prefix, d.hdr.request_id, *data, {data->payload, data->length});
    FERRY_FUZZ_CHECK(p && *p + data->length == encoded.size() &&
                         equal_bytes(std::span{prefix}.first(*p), encoded.first(*p)),
                     "encode_data_prefix disagrees with encode_reply");
  }
}

}  // namespace

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned seed) {
  return ferry::fuzz::mutate_and_reseal(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto wire = std::as_bytes(std::span{data, size});

  const auto hdr = codec::decode_header(wire);
  const auto id = codec::peek_request_id(wire);
  if (size < proto::header_size)
    FERRY_FUZZ_CHECK(!hdr && hdr.error() == errc::malformed && id == 0,
                     "a datagram shorter than a header has one");
  if (hdr) FERRY_FUZZ_CHECK(hdr->request_id == id, "peek_request_id disagrees with the header");

  const auto req = codec::decode_request(wire);
  const auto rep = codec::decode_reply(wire);
  FERRY_FUZZ_CHECK(!(req && rep), "a datagram decodes both as a request and as a reply");
  // The one datagram of another protocol version that decodes: the error reply saying so
  // (PROTOCOL.md, "Versions"), so that a client can tell its user why nothing else does.
  const bool other_version = !hdr && hdr.error() == errc::unsupported_version && rep;
  if (other_version) {
    const auto* e = std::get_if<proto::error_reply>(&rep->body);
    FERRY_FUZZ_CHECK(
        e != nullptr && e->code == errc::unsupported_version,
        "a reply of another version decodes, other than its unsupported_version error");
  }
  if (!hdr)
    FERRY_FUZZ_CHECK(!req && (!rep || other_version), "a datagram without a valid header decodes");
  if (!req)
    FERRY_FUZZ_CHECK(req.error() == errc::malformed || req.error() == errc::corrupt ||
                         req.error() == errc::bad_request ||
                         req.error() == errc::unsupported_version,
                     "decode_request fails with a code it does not document");
  if (!rep)
    FERRY_FUZZ_CHECK(rep.error() == errc::malformed || rep.error() == errc::corrupt ||
                         rep.error() == errc::unsupported_version,
                     "decode_reply fails with a code it does not document");

  if (req) {
    FERRY_FUZZ_CHECK(proto::is_request_type(static_cast<std::uint8_t>(req->hdr.type)),
                     "a reply type decoded as a request");
    check_request(wire, *req);
  }
  if (rep) {
    FERRY_FUZZ_CHECK(!proto::is_request_type(static_cast<std::uint8_t>(rep->hdr.type)),
                     "a request type decoded as a reply");
    // Encoded again it would carry this version's number, so it is not compared byte for byte.
    if (!other_version) check_reply(wire, *rep);
  }
  return 0;
}
