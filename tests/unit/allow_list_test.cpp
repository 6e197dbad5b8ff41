// Unit tests for ferryd --allow: parsing networks, and which addresses they hold.

#include "server/allow_list.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>

#include <string>

namespace {

using ferry::server::allow_list;
using ferry::server::network;

network net(const char* text) {
  std::string why;
  auto n = network::parse(text, why);
  REQUIRE_MESSAGE(n, why);
  return *n;
}

sockaddr_storage addr(const char* text) {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
  } else {
    REQUIRE(::inet_pton(AF_INET6, text, &v6->sin6_addr) == 1);
    v6->sin6_family = AF_INET6;
  }
  return ss;
}

bool allows(const allow_list& l, const char* text) {
  const auto ss = addr(text);
  return l.allows(reinterpret_cast<const sockaddr*>(&ss));
}

}  // namespace

TEST_CASE("networks parse as CIDR, a lone address as itself, and mistakes are explained") {
  CHECK(net("192.0.2.0/24").to_string() == "192.0.2.0/24");
  CHECK(net("192.0.2.7").to_string() == "192.0.2.7/32");
  CHECK(net("2001:db8::/32").to_string() == "2001:db8::/32");
  CHECK(net("::1").to_string() == "::1/128");
  CHECK(net("0.0.0.0/0").to_string() == "0.0.0.0/0");
  for (const char* bad : {"", "192.0.2.0/33", "::/129", "192.0.2.0/", "192.0.2.0/x", "host/24",
                          "192.0.2.0/24/1", "192.0.2.0/ 24"}) {
    CAPTURE(bad);
    std::string why;
    CHECK_FALSE(network::parse(bad, why));
    CHECK_FALSE(why.empty());
  }
  std::string why;
  CHECK_FALSE(network::parse("192.0.2.1/24", why));
  CHECK(why.find("did you mean '192.0.2.0/24'") != std::string::npos);
}

TEST_CASE("an allow list holds the addresses of its networks, mapped IPv4 included") {
  const allow_list everyone;
  CHECK(allows(everyone, "203.0.113.9"));
  CHECK(allows(everyone, "2001:db8::1"));

  const allow_list l{{net("192.0.2.0/24"), net("10.128.0.0/9"), net("2001:db8::/32")}};
  CHECK(allows(l, "192.0.2.0"));
  CHECK(allows(l, "192.0.2.255"));
  CHECK_FALSE(allows(l, "192.0.3.0"));
  CHECK(allows(l, "10.200.1.1"));
  CHECK_FALSE(allows(l, "10.127.255.255"));  // the ninth bit differs
  CHECK(allows(l, "2001:db8:ffff::1"));
  CHECK_FALSE(allows(l, "2001:db9::1"));
  CHECK(allows(l, "::ffff:192.0.2.7"));  // as a dual-stack socket reports an IPv4 client
  CHECK_FALSE(allows(l, "::ffff:198.51.100.7"));
  CHECK_FALSE(allows(l, "::1"));

  const allow_list all4{{net("0.0.0.0/0")}};
  CHECK(allows(all4, "198.51.100.7"));
  CHECK_FALSE(allows(all4, "2001:db8::1"));
}
