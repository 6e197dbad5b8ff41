#include "common/message_bodies.hpp"

#include "common/xxh3_wide.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::codec::wire {

using protocol::errc;

namespace {

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

// Permission bits: nothing above 07777 (the file type is the entry's `type`).
void save_mode(out_archive& ar, std::uint16_t mode) {
  if (mode > protocol::max_mode) throw codec_error{errc::bad_request};
  ar(mode);
}
std::uint16_t load_mode(in_archive& ar) {
  std::uint16_t mode = 0;
  ar(mode);
  if (mode > protocol::max_mode) throw codec_error{errc::malformed};
  return mode;
}

// Only a symlink has a target, and a target holds no NUL (readlink(2) never gives one).
bool valid_target(const protocol::list_entry& e) {
  if (e.target.empty()) return true;
  return e.type == protocol::entry_type::symlink && e.target.find('\0') == std::string::npos;
}

constexpr std::uint8_t max_entry_type = static_cast<std::uint8_t>(protocol::entry_type::other);
// Every code but errc::corrupt, which is never sent.
constexpr std::uint8_t max_errc = static_cast<std::uint8_t>(errc::authentication_required);
bool sendable(errc e) noexcept {
  return static_cast<std::uint8_t>(e) <= max_errc && e != errc::corrupt;
}

}  // namespace

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

namespace {
// Every block of a run must start at an offset a u64 holds.
bool valid_run(std::uint64_t offset, std::uint32_t block, std::uint16_t count) {
  return block != 0 && count >= 1 && count <= protocol::max_run_blocks &&
         offset <= UINT64_MAX - std::uint64_t{count - 1u} * block;
}
}  // namespace

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
    save_mode(ar, e.mode);
    if (!valid_target(e)) throw codec_error{errc::bad_request};
    save_string(ar, e.target, protocol::max_link_target);
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
    e.mode = load_mode(ar);
    load_string(ar, e.target, protocol::max_link_target);
    if (!valid_target(e)) throw codec_error{errc::malformed};
  }
  m.end = load_bool(ar);
}

void save_body(out_archive& ar, const protocol::stat_reply& m) {
  if (static_cast<std::uint8_t>(m.type) > max_entry_type ||
      m.max_block < protocol::min_block_size || m.max_block > protocol::max_block_size)
    throw codec_error{errc::bad_request};
  save_u8(ar, static_cast<std::uint8_t>(m.type));
  ar(m.size, m.mtime_ns);
  save_mode(ar, m.mode);
  save_version(ar, m.version);
  ar(m.max_block);
  save_u8(ar, m.digest_ready ? 1 : 0);
  ar(m.digest.high, m.digest.low);
}
void load_body(in_archive& ar, protocol::stat_reply& m) {
  m.type = static_cast<protocol::entry_type>(load_u8(ar, max_entry_type));
  ar(m.size, m.mtime_ns);
  m.mode = load_mode(ar);
  load_version(ar, m.version);
  ar(m.max_block);
  if (m.max_block < protocol::min_block_size || m.max_block > protocol::max_block_size)
    throw codec_error{errc::malformed};
  m.digest_ready = load_bool(ar);
  ar(m.digest.high, m.digest.low);
}

namespace {
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
}  // namespace

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
  if (!sendable(m.code)) throw codec_error{errc::bad_request};
  save_u8(ar, static_cast<std::uint8_t>(m.code));
  save_string(ar, m.message, protocol::max_message);
}
void load_body(in_archive& ar, protocol::error_reply& m) {
  m.code = static_cast<errc>(load_u8(ar, max_errc));
  if (!sendable(m.code)) throw codec_error{errc::malformed};
  load_string(ar, m.message, protocol::max_message);
}

}  // namespace ferry::codec::wire
