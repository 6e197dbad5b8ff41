// The client's request engine against scripted servers on real sockets: it asks again after
// loss, echoes a token at once, waits out a digest being computed, and ends every exchange with
// one outcome, a failure within the timeout included, even when the server says only "busy".
// Also: several exchanges on one loop, cancellation, and a whole fetch on one run of the loop.

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "client/commands.hpp"
#include "client/connection.hpp"
#include "client/fetch.hpp"
#include "client/request_engine.hpp"
#include "client/task.hpp"
#include "common/protocol.hpp"
#include "support/scripted_server.hpp"

namespace {

namespace proto = ferry::protocol;
using ferry::client::ask_options;
using ferry::client::clock;
using ferry::client::connection;
using ferry::client::exit_code;
using ferry::client::failure;
using ferry::client::request_engine;
using ferry::client::task;
using ferry::test::scripted_server;
using std::chrono::milliseconds;

proto::stat_reply a_file(bool digest_ready = true) {
  proto::stat_reply st;
  st.type = proto::entry_type::file;
  st.size = 1234;
  st.max_block = 1024;
  st.digest_ready = digest_ready;
  return st;
}

// Runs one exchange to its end on the connection's loop.
proto::reply ask(connection& conn, proto::request req, ask_options opt) {
  request_engine engine{conn.loop()};
  return engine.ask(conn, std::move(req), opt).run_on(conn.loop());
}

}  // namespace

TEST_CASE("a lost request is asked again, and the answer ends the exchange") {
  scripted_server srv{[](const auto&, std::uint64_t n) -> std::optional<proto::reply> {
    if (n < 2) return std::nullopt;  // the first two never arrive
    return a_file();
  }};
  connection conn{srv.endpoint()};
  const auto reply = ask(conn, proto::stat_request{"f"}, {std::chrono::seconds{10}});
  REQUIRE(std::holds_alternative<proto::stat_reply>(reply));
  CHECK(std::get<proto::stat_reply>(reply).size == 1234);
  CHECK(srv.requests() == 3);
}

TEST_CASE("a token demand is answered at once with the token") {
  proto::address_token token{};
  token[0] = std::byte{42};
  scripted_server srv{
      [&](const ferry::codec::decoded_request& r, std::uint64_t) -> std::optional<proto::reply> {
        if (!r.hdr.has_token() || r.hdr.token != token) return proto::token_reply{token};
        return a_file();
      }};
  connection conn{srv.endpoint()};
  const auto start = clock::now();
  const auto reply = ask(conn, proto::stat_request{"f"}, {std::chrono::seconds{10}});
  CHECK(std::holds_alternative<proto::stat_reply>(reply));
  CHECK(srv.requests() == 2);
  // Not after a retransmission timeout (500 ms before any RTT sample).
  CHECK(clock::now() - start < milliseconds{400});
}

TEST_CASE("a server that answers only busy ends the exchange after the timeout, saying so") {
  scripted_server srv{[](const auto&, std::uint64_t) -> std::optional<proto::reply> {
    return proto::error_reply{proto::errc::busy, "busy"};
  }};
  connection conn{srv.endpoint()};
  const auto start = clock::now();
  std::optional<failure> got;
  try {
    (void)ask(conn, proto::stat_request{"f"}, {milliseconds{600}});
  } catch (const failure& f) {
    got = f;
  }
  const auto took = clock::now() - start;
  REQUIRE(got);
  CHECK(got->code() == exit_code::network);
  CHECK(std::string{got->what()}.find("busy") != std::string::npos);
  CHECK(took >= milliseconds{600});
  CHECK(took < milliseconds{1500});
  // Asked again every 20 ms or so while busy, not in a tight loop.
  CHECK(srv.requests() >= 5);
  CHECK(srv.requests() <= 60);
}

TEST_CASE("a server that answers nothing fails the exchange within the timeout") {
  scripted_server srv{[](const auto&, std::uint64_t) { return std::optional<proto::reply>{}; }};
  connection conn{srv.endpoint()};
  const auto start = clock::now();
  CHECK_THROWS_AS((void)ask(conn, proto::list_request{"", ""}, {milliseconds{700}}), failure);
  const auto took = clock::now() - start;
  CHECK(took >= milliseconds{700});
  CHECK(took < milliseconds{1500});
  // The first retransmission after 500 ms; no more before the timeout.
  CHECK(srv.requests() == 2);
}

TEST_CASE("a closed port ends the exchange at once, on the kernel's ICMP refusal") {
  // A port that nothing is bound to: bound once to learn a free one, then closed.
  ferry::endpoint closed;
  {
    scripted_server gone{[](const auto&, std::uint64_t) { return std::optional<proto::reply>{}; }};
    closed = gone.endpoint();
  }
  connection conn{closed};
  const auto start = clock::now();
  std::optional<failure> got;
  try {
    (void)ask(conn, proto::stat_request{"f"}, {std::chrono::seconds{5}});
  } catch (const failure& f) {
    got = f;
  }
  REQUIRE(got);
  CHECK(got->code() == exit_code::network);
  CHECK(std::string{got->what()}.find("unreachable") != std::string::npos);
  CHECK(clock::now() - start < milliseconds{1000});
}

TEST_CASE("a digest being computed is polled until ready, and a digest that never comes ends") {
  SUBCASE("ready after a few polls") {
    scripted_server srv{
        [](const auto&, std::uint64_t n) -> std::optional<proto::reply> { return a_file(n >= 4); }};
    connection conn{srv.endpoint()};
    const auto st = ferry::client::stat_with_digest(conn, "f", std::chrono::seconds{5});
    CHECK(st.digest_ready);
    CHECK(srv.requests() == 5);
  }
  SUBCASE("never ready") {
    scripted_server srv{
        [](const auto&, std::uint64_t) -> std::optional<proto::reply> { return a_file(false); }};
    connection conn{srv.endpoint()};
    const auto start = clock::now();
    std::optional<failure> got;
    try {
      (void)ask(conn, proto::stat_request{"f"}, {milliseconds{200}, milliseconds{800}});
    } catch (const failure& f) {
      got = f;
    }
    REQUIRE(got);
    CHECK(std::string{got->what()}.find("digest") != std::string::npos);
    CHECK(clock::now() - start < milliseconds{2000});
  }
}

TEST_CASE("exchanges to several servers run at once on one loop, and a cancelled one is silent") {
  scripted_server fast{
      [](const auto&, std::uint64_t) -> std::optional<proto::reply> { return a_file(); }};
  scripted_server mute{[](const auto&, std::uint64_t) { return std::optional<proto::reply>{}; }};
  ferry::client::connection_group group{{fast.endpoint(), mute.endpoint(), fast.endpoint()}};
  auto conns = group.members();
  request_engine engine{group.loop()};
  int answered = 0, failed = 0, cancelled_calls = 0;
  auto count = [&](request_engine::outcome o) {
    if (std::holds_alternative<proto::reply>(o))
      ++answered;
    else
      ++failed;
  };
  (void)engine.start(*conns[0], proto::stat_request{"a"}, {milliseconds{800}}, count);
  (void)engine.start(*conns[1], proto::stat_request{"b"}, {milliseconds{300}}, count);
  const auto key = engine.start(*conns[2], proto::stat_request{"c"}, {milliseconds{800}},
                                [&](auto) { ++cancelled_calls; });
  engine.cancel(key);
  CHECK(engine.active() == 2);
  auto body = [&]() -> task<void> {
    ferry::client::gate g{engine};
    while (engine.active() > 0) co_await g.wait(milliseconds{10});
  };
  const auto start = clock::now();
  body().run_on(group.loop());
  CHECK(answered == 1);
  CHECK(failed == 1);
  CHECK(cancelled_calls == 0);
  CHECK(clock::now() - start < milliseconds{800});
}
