// Unit tests for what DNS-SD discovery decides without avahi: the TXT record a ferryd announces
// and how a client reads one (RFC 6763 section 6), instance names, and the dnssd+NAME source.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "client/discovery.hpp"
#include "common/dnssd.hpp"
#include "common/protocol.hpp"

namespace {

using ferry::dnssd::parse_txt;
using ferry::dnssd::txt_info;

}  // namespace

TEST_SUITE_BEGIN("dnssd");

TEST_CASE("a ferryd's TXT record reads back as it was written") {
  const txt_info info{ferry::dnssd::txt_version, ferry::protocol::version, "files"};
  const auto strings = ferry::dnssd::make_txt(info);
  CHECK(strings == std::vector<std::string>{"txtvers=1",
                                            "proto=" + std::to_string(ferry::protocol::version),
                                            "root=files"});
  std::string why;
  const auto back = parse_txt(strings, why);
  REQUIRE(back);
  CHECK(*back == info);
}

TEST_CASE("TXT strings are read as RFC 6763 says") {
  std::string why;
  SUBCASE("keys are case-insensitive, and the first string of a key counts") {
    auto t = parse_txt({"TxtVers=1", "PROTO=7", "proto=9", "Root=a=b", "root=c"}, why);
    REQUIRE(t);
    CHECK(t->protocol == 7);
    CHECK(t->root == "a=b");  // only the first '=' separates
  }
  SUBCASE("empty strings, keys without a value and unknown keys are passed over") {
    auto t = parse_txt({"", "txtvers=1", "flag", "future=x", "proto=2"}, why);
    REQUIRE(t);
    CHECK(t->root.empty());
  }
  SUBCASE("no txtvers: not a ferry service") {
    CHECK_FALSE(parse_txt({"proto=2", "root=x"}, why));
    CHECK(why.find("not a ferry service") != std::string::npos);
  }
  SUBCASE("another TXT version is not read") {
    CHECK_FALSE(parse_txt({"txtvers=2", "proto=2"}, why));
    CHECK(why.find("version '2'") != std::string::npos);
    CHECK_FALSE(parse_txt({"txtvers=1x", "proto=2"}, why));
    CHECK_FALSE(parse_txt({"txtvers", "proto=2"}, why));
  }
  SUBCASE("proto missing or not a number") {
    for (const auto& p : {"", "proto", "proto=", "proto=two", "proto=-1", "proto=99999999999"}) {
      INFO(p);
      CHECK_FALSE(parse_txt({"txtvers=1", p}, why));
    }
  }
  SUBCASE("a long root is cut, never mid-character") {
    std::string root(ferry::dnssd::max_root_name - 1, 'a');
    root += "\xc3\xa9\xc3\xa9";  // two 2-byte characters across the limit
    auto t = parse_txt({"txtvers=1", "proto=2", "root=" + root}, why);
    REQUIRE(t);
    CHECK(t->root == std::string(ferry::dnssd::max_root_name - 1, 'a'));
    const auto made = ferry::dnssd::make_txt({1, 2, root});
    CHECK(made[2].size() <= 255);
    CHECK(made[2] == "root=" + std::string(ferry::dnssd::max_root_name - 1, 'a'));
  }
}

TEST_CASE("instance names: one DNS label of UTF-8") {
  std::string why;
  CHECK(ferry::dnssd::valid_instance_name("files on nas #2", why));
  CHECK(ferry::dnssd::valid_instance_name("caf\xc3\xa9.example", why));  // dots are allowed
  CHECK(ferry::dnssd::valid_instance_name(std::string(63, 'x'), why));
  CHECK_FALSE(ferry::dnssd::valid_instance_name("", why));
  CHECK_FALSE(ferry::dnssd::valid_instance_name(std::string(64, 'x'), why));
  CHECK_FALSE(ferry::dnssd::valid_instance_name("a\nb", why));
  CHECK_FALSE(ferry::dnssd::valid_instance_name("a\x7f", why));
}

TEST_CASE("the default instance name is ROOT on HOST, at most 63 bytes") {
  CHECK(ferry::dnssd::default_instance_name("files", "nas") == "files on nas");
  CHECK(ferry::dnssd::default_instance_name("", "nas") == "ferryd on nas");
  CHECK(ferry::dnssd::default_instance_name("/", "nas") == "ferryd on nas");
  std::string root(61, 'r');
  root += "\xe2\x82\xac";  // a 3-byte character that would cross byte 63
  const auto name = ferry::dnssd::default_instance_name(root, "nas");
  CHECK(name == std::string(61, 'r'));
  std::string why;
  CHECK(ferry::dnssd::valid_instance_name(name, why));
}

TEST_CASE("dnssd+NAME names a DNS-SD service; srv+ and HOST:PORT are left as they were") {
  std::string why;
  auto s = ferry::client::parse_server_spec("dnssd+files on nas #2", why);
  REQUIRE(s);
  CHECK(s->dnssd);
  CHECK_FALSE(s->srv);
  CHECK(s->host == "files on nas #2");
  auto colon = ferry::client::parse_server_spec("dnssd+a:7070", why);  // a name, not a port
  REQUIRE(colon);
  CHECK(colon->host == "a:7070");
  auto srv = ferry::client::parse_server_spec("srv+files.example", why);
  REQUIRE(srv);
  CHECK_FALSE(srv->dnssd);
  auto plain = ferry::client::parse_server_spec("dnssd:7070", why);  // a host named dnssd
  REQUIRE(plain);
  CHECK_FALSE(plain->dnssd);
  CHECK(plain->host == "dnssd");
  for (const std::string& bad :
       std::vector<std::string>{"dnssd+", "dnssd+" + std::string(64, 'x'), "dnssd+a\tb"}) {
    INFO(bad);
    CHECK_FALSE(ferry::client::parse_server_spec(bad, why));
    CHECK_FALSE(why.empty());
  }
}

TEST_SUITE_END();
