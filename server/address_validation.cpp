#include "server/address_validation.hpp"

#include <netinet/in.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/byte_order.hpp"

namespace ferry::server {

namespace {

constexpr std::uint64_t rotl(std::uint64_t x, int b) noexcept { return (x << b) | (x >> (64 - b)); }

struct sip_state {
  std::uint64_t v0, v1, v2, v3;
  void round() noexcept {
    v0 += v1;
    v1 = rotl(v1, 13);
    v1 ^= v0;
    v0 = rotl(v0, 32);
    v2 += v3;
    v3 = rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = rotl(v1, 17);
    v1 ^= v2;
    v2 = rotl(v2, 32);
  }
  void absorb(std::uint64_t m) noexcept {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

}  // namespace

std::uint64_t siphash24(const std::array<std::uint64_t, 2>& key,
                        std::span<const std::byte> in) noexcept {
  sip_state s{key[0] ^ 0x736f6d6570736575ULL, key[1] ^ 0x646f72616e646f6dULL,
              key[0] ^ 0x6c7967656e657261ULL, key[1] ^ 0x7465646279746573ULL};
  const std::size_t whole = in.size() & ~std::size_t{7};
  for (std::size_t i = 0; i < whole; i += 8) s.absorb(bytes::get_le<std::uint64_t>(in.data() + i));
  std::uint64_t last = static_cast<std::uint64_t>(in.size() & 0xff) << 56;
  for (std::size_t i = whole; i < in.size(); ++i)
    last |= std::to_integer<std::uint64_t>(in[i]) << (8 * (i - whole));
  s.absorb(last);
  s.v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

namespace {
std::uint32_t window_of(const protocol::address_token& token) noexcept {
  std::uint32_t window = 0;
  for (std::size_t i = 4; i-- > 0;)
    window = (window << 8) | std::to_integer<std::uint32_t>(token[i]);
  return window;
}
}  // namespace

address_validator::address_validator(std::uint64_t window_ms)
    : window_ms_{window_ms == 0 ? default_window_ms : window_ms} {
  std::array<std::uint64_t, 4> secret{};
  auto* p = reinterpret_cast<char*>(secret.data());
  std::size_t got = 0;
  while (got < sizeof secret) {
    const auto n = ::getrandom(p + got, sizeof secret - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error{"cannot draw a secret for address validation"};
    got += static_cast<std::size_t>(n);
  }
  key_a_ = {secret[0], secret[1]};
  key_b_ = {secret[2], secret[3]};
}

void address_validator::mac(std::uint32_t window, const sockaddr* peer,
                            std::byte* out) const noexcept {
  // The token is bound to the window, the address family, the address and the port.
  address_key key;
  const auto n = address_key_of(peer, key);
  std::byte msg[4 + address_key_size]{};
  for (int i = 0; i < 4; ++i) msg[i] = std::byte(window >> (8 * i));
  std::memcpy(msg + 4, key.data(), n);
  const std::span<const std::byte> in{msg, 4 + n};
  const std::uint64_t halves[2] = {siphash24(key_a_, in), siphash24(key_b_, in)};
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 8; ++i) out[8 * h + i] = std::byte(halves[h] >> (8 * i));
}

protocol::address_token address_validator::issue(const sockaddr* peer, std::uint64_t now_ms) const {
  const auto window = static_cast<std::uint32_t>(now_ms / window_ms_);
  protocol::address_token t{};
  for (std::size_t i = 0; i < 4; ++i) t[i] = std::byte(window >> (8 * i));
  mac(window, peer, t.data() + 4);
  return t;
}

bool address_validator::valid(const protocol::address_token& token, const sockaddr* peer,
                              std::uint64_t now_ms) const noexcept {
  address_key bound;
  if (address_key_of(peer, bound) == 0) return false;
  const auto window = window_of(token);
  const auto now = static_cast<std::uint32_t>(now_ms / window_ms_);
  if (window != now && window + 1 != now) return false;
  std::byte expect[16];
  mac(window, peer, expect);
  // Compared in constant time, so the comparison leaks nothing about a near miss.
  unsigned diff = 0;
  for (std::size_t i = 0; i < 16; ++i) diff |= std::to_integer<unsigned>(expect[i] ^ token[4 + i]);
  return diff == 0;
}

bool address_validator::fresh(const protocol::address_token& token,
                              std::uint64_t now_ms) const noexcept {
  return window_of(token) == static_cast<std::uint32_t>(now_ms / window_ms_);
}

}  // namespace ferry::server
