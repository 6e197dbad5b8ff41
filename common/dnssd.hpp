#pragma once

// What a ferryd announces with DNS-SD (ferryd --announce) and what a client reads back: the
// service type, the instance name's limits, and the TXT record (docs/PROTOCOL.md, "DNS-SD").
// Pure functions: the avahi calls live in server/announce.* and client/dnssd.*.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::dnssd {

// The DNS-SD service type of ferry servers, in every domain (RFC 6763 section 7).
inline constexpr std::string_view service_type = "_ferry._udp";
// An instance name is one DNS label: at most 63 bytes of UTF-8 (RFC 6763 section 4.1.1).
inline constexpr std::size_t max_instance_name = 63;
// The version of the TXT record's format ("txtvers", RFC 6763 section 6.7).
inline constexpr std::uint32_t txt_version = 1;
// The longest value of "root" in a TXT string (a TXT string holds at most 255 bytes).
inline constexpr std::size_t max_root_name = 200;

// What the TXT record of a ferry service says.
struct txt_info {
  std::uint32_t txtvers = txt_version;
  std::uint32_t protocol = 0;  // the ferry protocol version the server speaks
  std::string root;            // the last component of the served directory; may be empty
  friend bool operator==(const txt_info&, const txt_info&) = default;
};

// The TXT strings ("key=value") for `info`, the root name cut to max_root_name bytes (at a
// UTF-8 character boundary).
[[nodiscard]] std::vector<std::string> make_txt(const txt_info& info);

// Reads TXT strings as RFC 6763 section 6 says: keys are case-insensitive, the first string of
// a key counts, a string without '=' is a key with no value, empty strings are ignored. A
// service is ferry's when it has txtvers=1 and a numeric proto; nullopt with `why` set
// otherwise. It does not check that `proto` is the one this build speaks.
[[nodiscard]] std::optional<txt_info> parse_txt(const std::vector<std::string>& strings,
                                                std::string& why);

// Whether `name` can be an instance name: 1 to 63 bytes, no control characters.
[[nodiscard]] bool valid_instance_name(std::string_view name, std::string& why);

// The name ferryd announces when not told one: "ROOT on HOST", cut to 63 bytes at a UTF-8
// character boundary; "ferryd on HOST" when the root has no name (/).
[[nodiscard]] std::string default_instance_name(std::string_view root_name, std::string_view host);

// `text` cut to at most `limit` bytes without splitting a UTF-8 character.
[[nodiscard]] std::string cut_utf8(std::string_view text, std::size_t limit);

}  // namespace ferry::dnssd
