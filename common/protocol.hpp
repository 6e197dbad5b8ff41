#pragma once

// The wire protocol of ferry: message types, limits and error codes.
// docs/PROTOCOL.md is the contract; change both together.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ferry::protocol {

// "FERY" in ASCII, then one version byte: a datagram that does not start so is not ours.
inline constexpr std::array<std::uint8_t, 4> magic{0x46, 0x45, 0x52, 0x59};
inline constexpr std::uint8_t version = 2;
inline constexpr std::size_t header_size = 16;

// Lengths the decoder enforces before it allocates anything.
inline constexpr std::size_t max_path = 4096;    // PATH_MAX
inline constexpr std::size_t max_name = 255;     // NAME_MAX
inline constexpr std::size_t max_depth = 64;     // path components in one request
inline constexpr std::size_t max_message = 256;  // error text
inline constexpr std::size_t max_list_entries = 256;
// A symlink's target in a listing: longer ones are listed without it. With a name of max_name
// bytes, an entry that carries one still fits a page of max_small_reply bytes.
inline constexpr std::size_t max_link_target = 512;
// Permission bits a listing or stat carries: st_mode & 07777 (setuid, setgid and sticky
// included; what a client does with those is its own business).
inline constexpr std::uint16_t max_mode = 07777;
inline constexpr std::uint16_t max_run_blocks = 64;    // blocks one GET-RUN asks for
inline constexpr std::size_t max_request_size = 8192;  // no valid request is larger
inline constexpr std::size_t max_datagram = 65507;     // largest IPv4 UDP payload

// Replies the server shapes itself stay below this, so they are never IP-fragmented
// on any path that carries IPv6 (1280-byte minimum MTU) or QUIC.
inline constexpr std::size_t max_small_reply = 1200;

// Bytes a data reply spends outside its payload (header + fixed body fields).
inline constexpr std::size_t data_reply_overhead = header_size + 1 + 8 + 1 + 40 + 8 + 8;
// Bytes every other message spends on its trailing checksum.
inline constexpr std::size_t checksum_size = 8;
// The largest block any server may send: one unfragmented-by-UDP datagram on IPv4.
inline constexpr std::uint32_t max_block_size = 65024;  // 127 * 512, fits 65507 with overhead
inline constexpr std::uint32_t min_block_size = 512;
static_assert(max_block_size + data_reply_overhead <= max_datagram);

// Address validation (PROTOCOL.md, "Address validation"). A request whose header has
// flag_token set carries a token_size-byte token right after the header. The token is opaque to
// clients: they echo the one the server last gave them.
inline constexpr std::uint16_t flag_token = 0x0001;
inline constexpr std::size_t token_size = 20;
// Until a source address proves it receives what is sent to it, the server sends it at most
// this many times the bytes it received from it (QUIC's rule, RFC 9000 section 8.1).
inline constexpr std::size_t amplification_limit = 3;

enum class msg_type : std::uint8_t {
  list_request = 0x01,
  stat_request = 0x02,
  get_request = 0x03,
  get_run_request = 0x04,
  list_reply = 0x81,
  stat_reply = 0x82,
  data_reply = 0x83,
  token_reply = 0x84,
  error_reply = 0xEE,
};

// Error codes on the wire. Values are part of the protocol and never reused.
enum class errc : std::uint8_t {
  ok = 0,
  malformed = 1,            // the datagram does not decode
  unsupported_version = 2,  // header parsed, protocol version unknown
  bad_path = 3,             // empty component, NUL, too long or too deep
  outside_root = 4,         // "..", absolute, or a symlink leaving the root
  not_found = 5,
  not_regular = 6,  // FIFO, device, socket, directory where a file is needed
  not_directory = 7,
  permission_denied = 8,
  io_error = 9,
  busy = 10,  // server at its limit of queued work; ask again later
  symlink_loop = 11,
  bad_request = 12,  // decodes, but the values are out of range
  // Never sent: what a decoder reports for a datagram whose checksum does not match.
  corrupt = 13,
  // The server has a pre-shared key and the request was not sealed with it in the server's
  // mode, or the server has none and the request was sealed (PROTOCOL.md, "Pre-shared key").
  authentication_required = 14,
};

// A name a listing may carry: one path component, neither "." nor "..", without "/" or NUL.
// The server lists only such names and the client refuses any other.
[[nodiscard]] bool valid_entry_name(std::string_view name) noexcept;

// Type values below 0x80 are requests, in every protocol version; a server answers nothing else.
[[nodiscard]] constexpr bool is_request_type(std::uint8_t type) noexcept { return type < 0x80; }

[[nodiscard]] std::string_view to_string(errc e) noexcept;
// The code's name as PROTOCOL.md spells it, e.g. "not_found", for logs and scripts.
[[nodiscard]] std::string_view code_name(errc e) noexcept;
[[nodiscard]] std::string_view to_string(msg_type t) noexcept;

// Identifies one version of one file: if any of these change, the bytes may have changed.
struct file_version {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  friend bool operator==(const file_version&, const file_version&) = default;
};

enum class entry_type : std::uint8_t { file = 0, dir = 1, symlink = 2, other = 3 };
[[nodiscard]] std::string_view to_string(entry_type t) noexcept;

struct digest128 {
  std::uint64_t high = 0;
  std::uint64_t low = 0;
  friend bool operator==(const digest128&, const digest128&) = default;
};

using address_token = std::array<std::byte, token_size>;

struct header {
  msg_type type{};
  std::uint16_t flags = 0;  // flag_token, or zero; other bits are reserved and ignored
  std::uint64_t request_id = 0;
  address_token token{};  // meaningful only if flags has flag_token
  [[nodiscard]] bool has_token() const noexcept { return (flags & flag_token) != 0; }
};

struct list_request {
  std::string path;    // "" is the root
  std::string cursor;  // list names strictly after this one; "" starts at the beginning
};

struct stat_request {
  std::string path;
};

struct get_request {
  std::string path;
  std::uint64_t offset = 0;
  std::uint32_t block_size = 0;
  // Blocks asked for. 1 is a GET; 2..max_run_blocks a GET-RUN, which means that many GETs of the
  // blocks that follow each other from `offset`, with the request ids that follow this one's.
  std::uint16_t count = 1;
};

struct list_entry {
  list_entry() = default;
  // The fields in order; a file's mode and a symlink's target may be left out.
  list_entry(std::string n, entry_type t, std::uint64_t s, std::int64_t m, std::uint16_t mo = 0,
             std::string tg = {})
      : name{std::move(n)}, type{t}, size{s}, mtime_ns{m}, mode{mo}, target{std::move(tg)} {}

  std::string name;
  entry_type type = entry_type::other;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint16_t mode = 0;  // permission bits, st_mode & 07777
  // A symlink's target, as readlink(2) gives it; empty for other types, and for a symlink
  // whose target is longer than max_link_target or could not be read.
  std::string target;
  friend bool operator==(const list_entry&, const list_entry&) = default;
};

struct list_reply {
  std::vector<list_entry> entries;  // sorted by name, bytewise
  bool end = false;                 // no names after the last entry
};

struct stat_reply {
  entry_type type = entry_type::other;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint16_t mode = 0;  // permission bits, st_mode & 07777
  file_version version;
  std::uint32_t max_block = 0;  // the server's cap on block_size
  bool digest_ready = false;    // false: being computed, ask again
  digest128 digest;             // XXH3-128 of the whole file, valid if digest_ready
};

// A data reply does not own its payload: it points into the datagram it was decoded from,
// or into the buffer it will be sent from. Its checksum is the codec's business.
struct data_reply {
  std::uint64_t offset = 0;
  bool eof = false;  // the payload ends at the end of the file
  file_version version;
  const std::byte* payload = nullptr;
  std::uint32_t length = 0;
};

struct error_reply {
  errc code = errc::ok;
  std::string message;
};

// The answer to a request without a valid token: ask again, carrying this one.
struct token_reply {
  address_token token{};
};

using request = std::variant<list_request, stat_request, get_request>;
using reply = std::variant<list_reply, stat_reply, data_reply, error_reply, token_reply>;

}  // namespace ferry::protocol
