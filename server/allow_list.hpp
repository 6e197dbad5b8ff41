#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::server {

// One network of --allow: an IPv4 or IPv6 prefix.
struct network {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4
  unsigned prefix = 0;                   // bits that must match

  // "192.0.2.0/24", "2001:db8::/32", or one address ("192.0.2.7", "::1") for itself alone.
  // Bits set past the prefix are refused ("192.0.2.1/24"), as a likely mistake. Sets `why`.
  [[nodiscard]] static std::optional<network> parse(std::string_view text, std::string& why);
  [[nodiscard]] std::string to_string() const;
};

// The networks a server answers (ferryd --allow); empty allows every address. An IPv4 network
// also holds the IPv4-mapped IPv6 addresses (::ffff:192.0.2.7) a dual-stack socket reports.
class allow_list {
 public:
  allow_list() = default;
  explicit allow_list(std::vector<network> nets) : nets_{std::move(nets)} {}

  [[nodiscard]] bool empty() const noexcept { return nets_.empty(); }
  [[nodiscard]] bool allows(const sockaddr* peer) const noexcept;

 private:
  std::vector<network> nets_;
};

}  // namespace ferry::server
