#include "common/address.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace ferry {

std::optional<host_port> parse_host_port(std::string_view text, std::string& why) {
  host_port hp;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      why = "missing ']' after IPv6 address";
      return std::nullopt;
    }
    hp.host = std::string{text.substr(1, close - 1)};
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        why = "expected ':PORT' after ']'";
        return std::nullopt;
      }
      port_text = rest.substr(1);
      if (port_text.empty()) {
        why = "empty port";
        return std::nullopt;
      }
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon != std::string_view::npos && text.find(':') != colon) {
      why = "write an IPv6 address in brackets, as [::1]:7070";
      return std::nullopt;
    }
    hp.host = std::string{text.substr(0, colon)};
    if (colon != std::string_view::npos) {
      port_text = text.substr(colon + 1);
      if (port_text.empty()) {
        why = "empty port";
        return std::nullopt;
      }
    }
  }
  if (hp.host.empty()) {
    why = "empty host";
    return std::nullopt;
  }
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc{} || p != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      why = fmt::format("invalid port '{}'", port_text);
      return std::nullopt;
    }
    hp.port = static_cast<std::uint16_t>(value);
  }
  return hp;
}

std::uint16_t endpoint::port() const noexcept {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  return 0;
}

bool endpoint::is_loopback() const noexcept {
  if (family() == AF_INET) {
    const auto a = ntohl(reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr.s_addr);
    return (a >> 24) == 127;
  }
  if (family() == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a);
  }
  return false;
}

endpoint endpoint::from(const sockaddr* sa) noexcept {
  endpoint ep;
  if (sa == nullptr) return ep;
  ep.length = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  std::memcpy(&ep.storage, sa, ep.length);
  return ep;
}

bool operator==(const endpoint& a, const endpoint& b) noexcept {
  if (a.family() != b.family()) return false;
  if (a.family() == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b.storage);
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a.family() == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(&b.storage);
    return x->sin6_port == y->sin6_port &&
           std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return false;
}

std::vector<endpoint> resolve_all(const host_port& hp, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_protocol = IPPROTO_UDP;
  addrinfo* res = nullptr;
  const auto port = std::to_string(hp.port);
  if (int rc = ::getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    why = fmt::format("cannot resolve '{}': {}", hp.host, ::gai_strerror(rc));
    return {};
  }
  std::vector<endpoint> all;
  for (const auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    const auto ep = endpoint::from(ai->ai_addr);
    if (ep.length != 0 && std::find(all.begin(), all.end(), ep) == all.end()) all.push_back(ep);
  }
  ::freeaddrinfo(res);
  if (all.empty()) why = fmt::format("'{}' has no IPv4 or IPv6 address", hp.host);
  return all;
}

std::optional<endpoint> resolve(const host_port& hp, std::string& why) {
  auto all = resolve_all(hp, why);
  if (all.empty()) return std::nullopt;
  return all.front();
}

std::size_t address_key_of(const sockaddr* sa, address_key& out) noexcept {
  out.fill(std::byte{0});
  if (sa == nullptr) return 0;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out[0] = std::byte{4};
    std::memcpy(&out[1], &in->sin_addr, 4);
    std::memcpy(&out[5], &in->sin_port, 2);
    return 7;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out[0] = std::byte{6};
    std::memcpy(&out[1], &in6->sin6_addr, 16);
    std::memcpy(&out[17], &in6->sin6_port, 2);
    return 19;
  }
  return 0;
}

std::string to_string(const endpoint& ep) {
  char text[INET6_ADDRSTRLEN] = "?";
  if (ep.family() == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ep.storage)->sin_addr, text,
                sizeof text);
    return fmt::format("{}:{}", text, ep.port());
  }
  if (ep.family() == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ep.storage)->sin6_addr, text,
                sizeof text);
    return fmt::format("[{}]:{}", text, ep.port());
  }
  return "?";
}

}  // namespace ferry
