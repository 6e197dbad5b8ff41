// Unit tests for the server's access log, on scripted times: when a transfer or a listing
// ends, what its line says, and the bound on what it keeps.

#include "server/access_log.hpp"

#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/endpoints.hpp"

namespace {

using namespace ferry;
using namespace ferry::server;
using ferry::protocol::errc;
using line = std::map<std::string, std::string>;

struct recorder final : access_sink {
  std::vector<line> lines;
  void write(std::span<const log::field> fields) noexcept override {
    line l;
    for (const auto& f : fields) l[std::string{f.key}] = f.value;
    lines.push_back(std::move(l));
  }
};

const endpoint alice = test::v4(0x0a000001, 4000);
const endpoint bob = test::v4(0x0a000002, 4000);

access_event get(const endpoint& peer, const char* rel, std::uint64_t bytes,
                 errc result = errc::ok) {
  return {.op = access_op::get, .peer = peer, .rel = rel, .bytes = bytes, .result = result};
}

}  // namespace

TEST_CASE("a transfer is one line, written once its client has been idle for idle_ms") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{.idle_ms = 5'000, .max_open = 16}, std::move(rec)};
  log.record(get(alice, "big.iso", 1000), 100);
  log.record({.peer = alice, .rel = "big.iso", .requests = 4, .bytes = 4000}, 900);
  log.record(get(bob, "big.iso", 1000), 1000);
  log.expire(5'899);
  CHECK(out.lines.empty());
  log.expire(5'900);
  REQUIRE(out.lines.size() == 1);
  const auto& l = out.lines[0];
  CHECK(l.at("op") == "get");
  CHECK(l.at("client") == "10.0.0.1:4000");
  CHECK(l.at("path") == "big.iso");
  CHECK(l.at("result") == "ok");
  CHECK(l.at("bytes") == "5000");
  CHECK(l.at("requests") == "5");
  CHECK(l.at("refusals") == "0");
  CHECK(l.at("duration_ms") == "800");
  CHECK(log.open() == 1);  // bob's is still going
  log.end_all();
  REQUIRE(out.lines.size() == 2);
  CHECK(out.lines[1].at("client") == "10.0.0.2:4000");
  CHECK(log.open() == 0);
}

TEST_CASE("a transfer ends as its first refusal; busy alone ends it as busy") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{}, std::move(rec)};
  log.record(get(alice, "a", 0, errc::busy), 0);
  log.record(get(alice, "a", 100), 1);
  log.record(get(alice, "b", 0, errc::busy), 2);
  log.record(get(alice, "c", 100), 3);
  log.record(get(alice, "c", 0, errc::io_error), 4);
  log.record(get(alice, "c", 0, errc::not_found), 5);
  log.end_all();
  REQUIRE(out.lines.size() == 3);
  CHECK(out.lines[0].at("result") == "ok");
  CHECK(out.lines[0].at("refusals") == "1");
  CHECK(out.lines[1].at("result") == "busy");
  CHECK(out.lines[2].at("result") == "io_error");
  CHECK(out.lines[2].at("refusals") == "2");
}

TEST_CASE("a listing ends with its last page; a refused STAT at once, a served one never") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{}, std::move(rec)};
  log.record({.op = access_op::list, .peer = alice, .rel = "", .entries = 500}, 10);
  log.record({.op = access_op::stat, .peer = alice, .rel = "x"}, 11);
  CHECK(out.lines.empty());
  log.record({.op = access_op::list, .peer = alice, .rel = "", .entries = 20, .last = true}, 30);
  REQUIRE(out.lines.size() == 1);
  CHECK(out.lines[0].at("op") == "list");
  CHECK(out.lines[0].at("path") == ".");
  CHECK(out.lines[0].at("entries") == "520");
  CHECK(out.lines[0].at("requests") == "2");
  CHECK(out.lines[0].at("duration_ms") == "20");
  log.record({.op = access_op::stat, .peer = alice, .rel = "gone", .result = errc::not_found}, 40);
  REQUIRE(out.lines.size() == 2);
  CHECK(out.lines[1].at("op") == "stat");
  CHECK(out.lines[1].at("result") == "not_found");
  CHECK(log.open() == 0);
}

TEST_CASE("a full table ends the least recently active entry to make room") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{.idle_ms = 60'000, .max_open = 3}, std::move(rec)};
  log.record(get(alice, "1", 1), 1);
  log.record(get(alice, "2", 1), 2);
  log.record(get(alice, "3", 1), 3);
  log.record(get(alice, "1", 1), 4);  // 1 is active again: 2 is now the oldest
  log.record(get(alice, "4", 1), 5);
  REQUIRE(out.lines.size() == 1);
  CHECK(out.lines[0].at("path") == "2");
  CHECK(log.open() == 3);
  for (int i = 0; i < 1000; ++i) log.record(get(bob, std::to_string(i).c_str(), 1), 10);
  CHECK(log.open() == 3);
  CHECK(out.lines.size() == 1001);  // each new one ended the oldest
}

TEST_CASE("a refused STAT or a one-page listing takes no place from a transfer under way") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{.idle_ms = 60'000, .max_open = 1}, std::move(rec)};
  log.record(get(alice, "big.iso", 1000), 1);
  log.record({.op = access_op::stat, .peer = bob, .rel = "x", .result = errc::not_found}, 2);
  log.record({.op = access_op::list, .peer = bob, .rel = "d", .entries = 3, .last = true}, 3);
  REQUIRE(out.lines.size() == 2);
  CHECK(out.lines[1].at("entries") == "3");
  CHECK(log.open() == 1);  // big.iso is still under way
}

TEST_CASE("without a sink the log keeps nothing") {
  access_log log{{}, nullptr};
  CHECK_FALSE(log.on());
  log.record(get(alice, "big.iso", 1000), 1);
  CHECK(log.open() == 0);
  log.end_all();
}

TEST_CASE("a path is kept and logged up to max_path_logged bytes, cut paths marked") {
  auto rec = std::make_unique<recorder>();
  auto& out = *rec;
  access_log log{{}, std::move(rec)};
  const std::string deep(4000, 'd');
  log.record(get(alice, deep.c_str(), 10), 1);
  log.record(get(alice, deep.c_str(), 20), 2);  // the same transfer, found by its cut path
  CHECK(log.open() == 1);
  log.end_all();
  REQUIRE(out.lines.size() == 1);
  CHECK(out.lines[0].at("path") == std::string(access_log::max_path_logged, 'd') + "...");
  CHECK(out.lines[0].at("bytes") == "30");
}
