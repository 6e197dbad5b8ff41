// SipHash-2-4 against the reference vectors, and the address validator's tokens.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "server/address_validation.hpp"

namespace {

using ferry::server::address_validator;

sockaddr_in v4(const char* ip, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  REQUIRE(::inet_pton(AF_INET, ip, &a.sin_addr) == 1);
  return a;
}

sockaddr_in6 v6(const char* ip, std::uint16_t port) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  REQUIRE(::inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
  return a;
}

const sockaddr* sa(const auto& a) { return reinterpret_cast<const sockaddr*>(&a); }

}  // namespace

TEST_SUITE("address validation") {
  TEST_CASE("SipHash-2-4 matches the reference vectors") {
    // From the SipHash paper's reference implementation: key 00 01 .. 0f, message 00 01 .. i-1.
    const std::array<std::uint64_t, 2> key{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    const std::pair<std::size_t, std::uint64_t> vectors[] = {
        {0, 0x726fdb47dd0e0e31ULL},  {1, 0x74f839c593dc67fdULL},  {7, 0xab0200f58b01d137ULL},
        {8, 0x93f5f5799a932462ULL},  {15, 0xa129ca6149be45e5ULL}, {16, 0x3f2acc7f57c29bdbULL},
        {63, 0x958a324ceb064572ULL},
    };
    std::vector<std::byte> msg(64);
    for (std::size_t i = 0; i < msg.size(); ++i) msg[i] = std::byte(i);
    for (const auto& vector : vectors) {
      const std::size_t length = vector.first;
      CAPTURE(length);
      CHECK(ferry::server::siphash24(key, {msg.data(), length}) == vector.second);
    }
  }

  TEST_CASE("a token is valid for its address and port, in its window and the next") {
    const address_validator v;
    const auto a = v4("192.0.2.1", 4000);
    const auto t0 = std::uint64_t{5} * v.window_ms() + 17;
    const auto token = v.issue(sa(a), t0);
    CHECK(v.valid(token, sa(a), t0));
    CHECK(v.valid(token, sa(a), t0 + v.window_ms()));  // the next window
    CHECK_FALSE(v.valid(token, sa(a), t0 + 2 * v.window_ms()));
    CHECK_FALSE(v.valid(token, sa(a), t0 - v.window_ms()));  // not yet issued
    CHECK(v.window_ms() == 2048);  // tokens live seconds, so a replay soon draws only tokens
    CHECK(v.fresh(token, t0));
    CHECK_FALSE(v.fresh(token, t0 + v.window_ms()));  // valid, but due to be replaced
    CHECK(v.fresh(v.issue(sa(a), t0 + v.window_ms()), t0 + v.window_ms()));

    SUBCASE("a fresh token is handed out once the echoed one is old, at most every 256 ms") {
      const auto next = (t0 / v.window_ms() + 1) * v.window_ms();  // the next window begins
      CHECK_FALSE(v.refresh_due(token, 0, t0));  // the echoed token is of this window
      CHECK(v.refresh_due(token, 0, next));
      CHECK_FALSE(v.refresh_due(token, next, next + 255));  // one was just sent: maybe lost
      CHECK(v.refresh_due(token, next, next + 256));
      CHECK_FALSE(v.refresh_due(v.issue(sa(a), next), next - 1000, next + 10));
    }

    SUBCASE("not for another port, address or family") {
      const auto port = v4("192.0.2.1", 4001);
      const auto addr = v4("192.0.2.2", 4000);
      const auto six = v6("::ffff:192.0.2.1", 4000);
      CHECK_FALSE(v.valid(token, sa(port), t0));
      CHECK_FALSE(v.valid(token, sa(addr), t0));
      CHECK_FALSE(v.valid(token, sa(six), t0));
      const auto token6 = v.issue(sa(six), t0);
      CHECK(v.valid(token6, sa(six), t0));
      CHECK_FALSE(v.valid(token6, sa(a), t0));
    }
    SUBCASE("not from another server's secret, nor with any bit changed") {
      const address_validator other;
      CHECK_FALSE(other.valid(token, sa(a), t0));
      for (std::size_t i = 0; i < token.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
          auto t = token;
          t[i] ^= std::byte(1 << bit);
          CAPTURE(i);
          CHECK_FALSE(v.valid(t, sa(a), t0));
        }
      }
    }
    SUBCASE("a window number moved forward does not make an old MAC fresh") {
      auto t = token;
      t[0] = std::byte(std::to_integer<unsigned>(t[0]) + 1);
      CHECK_FALSE(v.valid(t, sa(a), t0 + v.window_ms()));
    }
  }
}
