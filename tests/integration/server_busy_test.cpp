// Beyond max_jobs the server answers busy, and every request gets exactly one answer.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::protocol::errc;
using namespace ferry::test;

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("beyond max_jobs the server answers busy, and every request gets one answer") {
  temp_dir root;
  root.write("f.txt", "x");
  running_server srv{root.path(), [](auto& c) { c.max_jobs = 1; }};
  blocking_client cli{srv.endpoint()};
  constexpr int n = 64;
  for (int i = 0; i < n; ++i)
    cli.send_raw(
        cli.encode_validated(5000 + static_cast<std::uint64_t>(i), proto::list_request{"", ""}));
  std::set<std::uint64_t> ids;
  int busy = 0, pages = 0;
  for (int i = 0; i < n; ++i) {
    auto wire = cli.recv_raw();
    REQUIRE(wire);
    auto r = ferry::codec::decode_reply(*wire);
    REQUIRE(r);
    CHECK(ids.insert(r->hdr.request_id).second);
    if (auto* e = std::get_if<proto::error_reply>(&r->body)) {
      CHECK(e->code == errc::busy);
      ++busy;
    } else {
      CHECK(std::holds_alternative<proto::list_reply>(r->body));
      ++pages;
    }
  }
  CHECK(pages >= 1);
  CHECK(busy + pages == n);
  CHECK(srv.counters().busy_sent.load() == static_cast<std::uint64_t>(busy));
  CHECK(*ids.begin() == 5000);
  CHECK(*ids.rbegin() == 5000 + n - 1);
  // Nothing is answered twice: a second answer would arrive before this one and be stray.
  REQUIRE(cli.stat("f.txt"));
  CHECK(cli.stray() == 0);
}

TEST_SUITE_END();
