// GET-RUN end to end: the fetcher asks for blocks that follow each other with one datagram and
// ferryd answers every block; a run beyond the client's queue is cut, not served; and a server
// that refuses GET-RUN (as one from before it does) is asked block by block, and the file
// still arrives whole.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "client/connection.hpp"
#include "client/fetch.hpp"
#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/fetch_once.hpp"
#include "support/running_server.hpp"
#include "support/scripted_server.hpp"

namespace {

namespace proto = ferry::protocol;
namespace fs = std::filesystem;
using ferry::client::fetch_options;
using namespace ferry::test;

}  // namespace

TEST_CASE("a fetch asks for consecutive blocks in runs, and every block is answered") {
  temp_dir root, dest;
  constexpr std::uint32_t block = 1390;
  const auto content = root.write_random("f.bin", 3000 * block + 77, 5);
  running_server srv{root.path()};
  fetch_options opt;
  opt.block_size = block;
  const auto before = srv.counter_snapshot();
  const auto r = fetch_once(srv.endpoint(), "f.bin", dest / "f.bin", opt);
  const auto after = srv.counter_snapshot();
  CHECK(read_file(dest / "f.bin") == content);
  CHECK(r.digest == xxh3_128(content));
  CHECK(r.requests == 3001 + r.retransmits);
  // Runs, not one datagram a block; the server saw each datagram once.
  INFO("datagrams " << r.datagrams << " for " << r.requests << " blocks");
  CHECK(r.datagrams * 2 < r.requests);
  CHECK(after.get_requests - before.get_requests <= r.datagrams);

  SUBCASE("and with runs off, one GET a block") {
    opt.max_run = 1;
    const auto one = fetch_once(srv.endpoint(), "f.bin", dest / "g.bin", opt);
    CHECK(read_file(dest / "g.bin") == content);
    CHECK(one.datagrams == one.requests);
  }
}

// Sends one GET-RUN with a valid token and gathers the data replies it draws, by request id,
// until none comes for `quiet`.
std::map<std::uint64_t, proto::data_reply> run_replies(blocking_client& cli, std::uint64_t id,
                                                       const proto::get_request& run,
                                                       std::vector<std::vector<std::byte>>& keep,
                                                       std::chrono::milliseconds quiet) {
  cli.send_raw(cli.encode_validated(id, run));
  std::map<std::uint64_t, proto::data_reply> got;
  while (auto wire = cli.recv_raw(quiet)) {
    keep.push_back(std::move(*wire));
    auto d = ferry::codec::decode_reply(keep.back());
    REQUIRE(d);
    auto* data = std::get_if<proto::data_reply>(&d->body);
    REQUIRE(data != nullptr);
    CHECK(got.emplace(d->hdr.request_id, *data).second);
  }
  return got;
}

TEST_CASE("ferryd answers each block of a GET-RUN with its own id, up to the queue limit") {
  temp_dir root;
  const auto content = root.write_random("f.bin", 100 * 512, 9);
  running_server srv{root.path(), [](ferry::server::config& c) { c.max_client_queue = 16; }};
  blocking_client cli{srv.endpoint()};
  (void)cli.token();
  std::vector<std::vector<std::byte>> keep;
  keep.reserve(200);
  // Within the limit: all 10 blocks, each with the id that goes with its offset.
  const auto id = cli.next_id();
  const auto got =
      run_replies(cli, id, proto::get_request{"f.bin", 512 * 20, 512, 10}, keep, 300ms);
  CHECK(got.size() == 10);
  for (const auto& [rid, d] : got) {
    const auto nth = rid - id;
    REQUIRE(nth < 10);
    CHECK(d.offset == 512 * (20 + nth));
    CHECK(std::string(reinterpret_cast<const char*>(d.payload), d.length) ==
          content.substr(d.offset, 512));
  }
  // Beyond it: a run of 64 into a queue of 16 is cut, and what is cut is counted as dropped.
  for (int i = 0; i < 64; ++i) (void)cli.next_id();
  const auto before = srv.counters().dropped_queue_full.load();
  const auto many =
      run_replies(cli, cli.next_id(), proto::get_request{"f.bin", 0, 512, 64}, keep, 300ms);
  CHECK(many.size() >= 16);
  CHECK(many.size() < 64);
  CHECK(srv.counters().dropped_queue_full.load() - before == 64 - many.size());
}

TEST_CASE("a server that refuses GET-RUN is asked block by block, and the file arrives whole") {
  constexpr std::uint32_t block = 512;
  const auto content = random_bytes(40 * block + 100, 3);
  proto::stat_reply st;
  st.type = proto::entry_type::file;
  st.size = content.size();
  st.version = proto::file_version{1, 2, content.size(), 3, 4};
  st.max_block = 65024;
  st.digest_ready = true;
  st.digest = xxh3_128(content);
  std::atomic<int> runs_refused{0};
  scripted_server old_server{
      [&](const ferry::codec::decoded_request& r, std::uint64_t) -> std::optional<proto::reply> {
        if (std::holds_alternative<proto::stat_request>(r.body)) return st;
        const auto* g = std::get_if<proto::get_request>(&r.body);
        if (g == nullptr) return proto::error_reply{proto::errc::bad_request, ""};
        // What a server from before GET-RUN answers a type it does not know.
        if (g->count > 1) {
          ++runs_refused;
          return proto::error_reply{proto::errc::malformed, ""};
        }
        proto::data_reply d;
        d.offset = g->offset;
        d.version = st.version;
        const auto len = std::min<std::uint64_t>(g->block_size, content.size() - g->offset);
        d.payload = reinterpret_cast<const std::byte*>(content.data() + g->offset);
        d.length = static_cast<std::uint32_t>(len);
        d.eof = g->offset + len == content.size();
        return d;
      }};
  temp_dir dest;
  fetch_options opt;
  opt.block_size = block;
  opt.timeout = std::chrono::seconds{5};
  const auto r = fetch_once(old_server.endpoint(), "f.bin", dest / "f.bin", opt);
  CHECK(read_file(dest / "f.bin") == content);
  CHECK(runs_refused.load() >= 1);
  CHECK(r.datagrams > 40);
}
