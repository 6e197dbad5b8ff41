// The server stops cleanly, leaving no handle or request, with requests and digests in flight.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using namespace ferry::test;

}  // namespace

TEST_SUITE_BEGIN("server");

TEST_CASE("the server stops cleanly with requests and digests in flight") {
  temp_dir root;
  root.write_random("big.bin", 4 << 20, 21);
  running_server srv{root.path()};
  {
    blocking_client cli{srv.endpoint()};
    cli.send_raw(cli.encode_validated(1, proto::stat_request{"big.bin"}));  // starts a digest
    for (std::uint64_t i = 0; i < 200; ++i)
      cli.send_raw(cli.encode_validated(2 + i, proto::get_request{"big.bin", i * 20'000, 20'000}));
    REQUIRE(wait_until([&] { return srv.counters().datagrams_in.load() >= 1; }));
  }
  srv.stop_and_join();
  CHECK(srv.loop_exited());
  // The destructor CHECKs that uv_loop_close() returns 0: no handle or request was left.
}

TEST_SUITE_END();
