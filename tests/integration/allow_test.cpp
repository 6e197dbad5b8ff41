// ferryd --allow against a real server on a real socket: a client outside the networks is
// told "permission denied" within the amplification limit and never served; one inside is.

#include <doctest/doctest.h>

#include <string>

#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace {

using namespace ferry::test;
namespace proto = ferry::protocol;

ferry::server::network net(const char* text) {
  std::string why;
  auto n = ferry::server::network::parse(text, why);
  REQUIRE_MESSAGE(n, why);
  return *n;
}

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("--allow: a client outside its networks is denied, one inside is served") {
    temp_dir root;
    root.write("a.txt", "hello\n");
    SUBCASE("outside") {
      running_server srv{root.path(), [](ferry::server::config& c) {
                           c.allow = ferry::server::allow_list{{net("10.0.0.0/8")}};
                         }};
      blocking_client cl{srv.endpoint()};
      const auto before = srv.counter_snapshot();
      const auto st = cl.stat("a.txt");
      REQUIRE_FALSE(st);
      CHECK(st.error() == proto::errc::permission_denied);
      const auto got = cl.get("a.txt", 0, 1024);
      REQUIRE_FALSE(got);
      CHECK(got.error() == proto::errc::permission_denied);
      CHECK(cl.token_replies() == 0);  // not even a token: nothing past the check
      const auto after = srv.counter_snapshot();
      CHECK(srv.counters().denied.load() == 2);
      CHECK(after.get_requests == before.get_requests);
      CHECK(after.bytes_out - before.bytes_out <=
            proto::amplification_limit * (after.bytes_in - before.bytes_in));
    }
    SUBCASE("inside") {
      running_server srv{
          root.path(), [](ferry::server::config& c) {
            c.allow = ferry::server::allow_list{{net("10.0.0.0/8"), net("127.0.0.0/8")}};
          }};
      blocking_client cl{srv.endpoint()};
      const auto got = cl.get("a.txt", 0, 1024);
      REQUIRE(got);
      CHECK(got->data == "hello\n");
      CHECK(srv.counters().denied.load() == 0);
    }
  }
}
