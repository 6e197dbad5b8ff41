#include "server/allow_list.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace ferry::server {

namespace {
// True if the first `prefix` bits of `a` and `b` agree.
bool same_prefix(const std::uint8_t* a, const std::uint8_t* b, unsigned prefix) noexcept {
  const unsigned whole = prefix / 8, rest = prefix % 8;
  if (std::memcmp(a, b, whole) != 0) return false;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}
}  // namespace

std::optional<network> network::parse(std::string_view text, std::string& why) {
  network n;
  const auto slash = text.find('/');
  const std::string addr{text.substr(0, slash)};
  if (::inet_pton(AF_INET, addr.c_str(), n.bytes.data()) == 1) {
    n.prefix = 32;
  } else if (::inet_pton(AF_INET6, addr.c_str(), n.bytes.data()) == 1) {
    n.v6 = true;
    n.prefix = 128;
  } else {
    why = fmt::format("'{}' is not an IPv4 or IPv6 address", addr);
    return std::nullopt;
  }
  if (slash != std::string_view::npos) {
    const auto bits = text.substr(slash + 1);
    unsigned p = 0;
    const auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), p);
    if (bits.empty() || ec != std::errc{} || end != bits.data() + bits.size() || p > n.prefix) {
      why = fmt::format("'/{}' is not a prefix length from 0 to {}", bits, n.prefix);
      return std::nullopt;
    }
    n.prefix = p;
  }
  // Bits past the prefix would be ignored; a network written with them is likely a typo.
  network masked = n;
  for (unsigned bit = n.prefix; bit < (n.v6 ? 128u : 32u); ++bit)
    masked.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  if (masked.bytes != n.bytes) {
    why = fmt::format("'{}' has address bits set past its prefix: did you mean '{}'?", text,
                      masked.to_string());
    return std::nullopt;
  }
  return n;
}

std::string network::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
  return fmt::format("{}/{}", buf, prefix);
}

bool allow_list::allows(const sockaddr* peer) const noexcept {
  if (nets_.empty()) return true;
  const std::uint8_t* v4 = nullptr;
  const std::uint8_t* v6 = nullptr;
  if (peer->sa_family == AF_INET) {
    v4 = reinterpret_cast<const std::uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(peer)->sin_addr);
  } else if (peer->sa_family == AF_INET6) {
    const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(peer)->sin6_addr;
    v6 = reinterpret_cast<const std::uint8_t*>(a6);
    if (IN6_IS_ADDR_V4MAPPED(a6)) v4 = v6 + 12;
  }
  for (const auto& n : nets_) {
    const auto* mine = n.v6 ? v6 : v4;
    if (mine != nullptr && same_prefix(mine, n.bytes.data(), n.prefix)) return true;
  }
  return false;
}

}  // namespace ferry::server
