// Unit tests for HOST[:PORT] parsing and endpoint formatting. No socket is opened and no name is
// resolved: endpoints are built from sockaddr_in / sockaddr_in6 directly.

#include "common/address.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

namespace {

ferry::endpoint v4(const char* text, std::uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  REQUIRE(::inet_pton(AF_INET, text, &sin.sin_addr) == 1);
  return ferry::endpoint::from(reinterpret_cast<const sockaddr*>(&sin));
}

ferry::endpoint v6(const char* text, std::uint16_t port) {
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  REQUIRE(::inet_pton(AF_INET6, text, &sin6.sin6_addr) == 1);
  return ferry::endpoint::from(reinterpret_cast<const sockaddr*>(&sin6));
}

}  // namespace

TEST_SUITE_BEGIN("address");

TEST_CASE("parse_host_port accepts") {
  struct row {
    const char* text;
    const char* host;
    std::uint16_t port;
  };
  const row rows[] = {
      {"127.0.0.1:7070", "127.0.0.1", 7070},
      {"[::1]:7070", "::1", 7070},
      {"[fe80::1%eth0]:9", "fe80::1%eth0", 9},
      {"host", "host", ferry::default_port},
      {"host:1", "host", 1},
      {"host:65535", "host", 65535},
      {"[::1]", "::1", ferry::default_port},
      {"example.org:443", "example.org", 443},
  };
  for (const auto& r : rows) {
    CAPTURE(r.text);
    std::string why;
    auto hp = ferry::parse_host_port(r.text, why);
    REQUIRE(hp);
    CHECK(hp->host == r.host);
    CHECK(hp->port == r.port);
    CHECK(why.empty());
  }
}

TEST_CASE("parse_host_port rejects, with a reason") {
  const char* rows[] = {
      "[::1",        // no closing bracket
      "::1:80",      // IPv6 needs brackets
      "::1",         // likewise, even without a port
      ":80",         // empty host
      "",            // empty host
      "[]:80",       // empty host in brackets
      "host:",       // empty port
      "[::1]:",      // empty port after brackets
      "[::1]80",     // no ':' after ']'
      "host:0",      // port 0 cannot be dialled
      "host:65536",  // port out of range
      "host:99999999999999999999",
      "host:abc",  // not a number
      "host:80x",  // trailing junk
      "host:-1",
      "host:+80",
      "host: 80",
  };
  for (const char* text : rows) {
    CAPTURE(text);
    std::string why;
    auto hp = ferry::parse_host_port(text, why);
    CHECK_FALSE(hp);
    CHECK_FALSE(why.empty());
  }
}

TEST_CASE("to_string of endpoints") {
  SUBCASE("IPv4") {
    CHECK(ferry::to_string(v4("127.0.0.1", 7070)) == "127.0.0.1:7070");
    CHECK(ferry::to_string(v4("192.168.10.254", 1)) == "192.168.10.254:1");
    CHECK(ferry::to_string(v4("0.0.0.0", 65535)) == "0.0.0.0:65535");
  }
  SUBCASE("IPv6 is bracketed") {
    CHECK(ferry::to_string(v6("::1", 7070)) == "[::1]:7070");
    CHECK(ferry::to_string(v6("2001:db8::1", 443)) == "[2001:db8::1]:443");
    CHECK(ferry::to_string(v6("::", 0)) == "[::]:0");
  }
  SUBCASE("an empty endpoint") {
    const ferry::endpoint none;
    CHECK(ferry::to_string(none) == "?");
    CHECK(none.port() == 0);
    CHECK(ferry::to_string(ferry::endpoint::from(nullptr)) == "?");
  }
}

TEST_CASE("endpoint fields and comparison") {
  const auto a = v4("10.1.2.3", 8080);
  CHECK(a.family() == AF_INET);
  CHECK(a.port() == 8080);
  CHECK(a.length == sizeof(sockaddr_in));
  const auto b = v6("2001:db8::2", 8081);
  CHECK(b.family() == AF_INET6);
  CHECK(b.port() == 8081);
  CHECK(b.length == sizeof(sockaddr_in6));

  CHECK(a == v4("10.1.2.3", 8080));
  CHECK_FALSE(a == v4("10.1.2.3", 8081));
  CHECK_FALSE(a == v4("10.1.2.4", 8080));
  CHECK(b == v6("2001:db8::2", 8081));
  CHECK_FALSE(b == v6("2001:db8::3", 8081));
  CHECK_FALSE(v4("127.0.0.1", 1) == v6("::1", 1));
}

TEST_CASE("endpoint::is_loopback") {
  CHECK(v4("127.0.0.1", 1).is_loopback());
  CHECK(v4("127.255.3.4", 1).is_loopback());
  CHECK_FALSE(v4("126.255.255.255", 1).is_loopback());
  CHECK_FALSE(v4("128.0.0.1", 1).is_loopback());
  CHECK_FALSE(v4("10.0.0.1", 1).is_loopback());
  CHECK_FALSE(v4("0.0.0.0", 1).is_loopback());
  CHECK(v6("::1", 1).is_loopback());
  CHECK_FALSE(v6("::", 1).is_loopback());
  CHECK_FALSE(v6("::2", 1).is_loopback());
  CHECK_FALSE(v6("2001:db8::1", 1).is_loopback());
  CHECK_FALSE(ferry::endpoint{}.is_loopback());
}

TEST_SUITE_END();

TEST_CASE("address_key_of names family, address and port, and nothing else") {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(7070);
  REQUIRE(::inet_pton(AF_INET, "1.2.3.4", &v4.sin_addr) == 1);
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(7070);
  // The same leading bytes as the IPv4 address, so only the family tells them apart.
  REQUIRE(::inet_pton(AF_INET6, "102:304::", &v6.sin6_addr) == 1);
  ferry::address_key a{}, b{};
  CHECK(ferry::address_key_of(reinterpret_cast<const sockaddr*>(&v4), a) == 7);
  CHECK(ferry::address_key_of(reinterpret_cast<const sockaddr*>(&v6), b) == 19);
  CHECK(a != b);
  auto other_port = v4;
  other_port.sin_port = htons(7071);
  ferry::address_key c{};
  (void)ferry::address_key_of(reinterpret_cast<const sockaddr*>(&other_port), c);
  CHECK(a != c);
  sockaddr unix_family{};
  unix_family.sa_family = AF_UNIX;
  CHECK(ferry::address_key_of(&unix_family, c) == 0);
  CHECK(ferry::address_key_of(nullptr, c) == 0);
}
