#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry {

inline constexpr std::uint16_t default_port = 7070;

// A host and port as the user wrote it: "127.0.0.1:7070", "[::1]:7070", "name:7070" or "name".
struct host_port {
  std::string host;
  std::uint16_t port = default_port;
};

// Splits "HOST[:PORT]" or "[V6]:PORT". Returns nullopt and sets `why` on bad syntax.
[[nodiscard]] std::optional<host_port> parse_host_port(std::string_view text, std::string& why);

// A resolved socket address.
struct endpoint {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* addr() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  [[nodiscard]] int family() const noexcept { return storage.ss_family; }
  [[nodiscard]] std::uint16_t port() const noexcept;
  [[nodiscard]] bool is_loopback() const noexcept;
  static endpoint from(const sockaddr* sa) noexcept;
  friend bool operator==(const endpoint& a, const endpoint& b) noexcept;
};

// Resolves with getaddrinfo (blocking: call it before the loop runs). Sets `why` on failure.
[[nodiscard]] std::optional<endpoint> resolve(const host_port& hp, std::string& why);
// Every address of the name, in the resolver's order of preference, each once; empty and `why`
// set on failure.
[[nodiscard]] std::vector<endpoint> resolve_all(const host_port& hp, std::string& why);

// The bytes that identify a peer: family (4 or 6), address and port, as they are in `sa`.
inline constexpr std::size_t address_key_size = 19;
using address_key = std::array<std::byte, address_key_size>;
// Fills `out` (zero-padded) and returns how many bytes mean something: 7 for IPv4, 19 for IPv6,
// 0 for any other family.
std::size_t address_key_of(const sockaddr* sa, address_key& out) noexcept;

// "127.0.0.1:7070" or "[::1]:7070".
[[nodiscard]] std::string to_string(const endpoint& ep);

}  // namespace ferry
