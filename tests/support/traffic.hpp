#pragma once

// Malformed traffic against a live server: datagrams sent through one client and checked, against
// the server's counters, to be received and accounted for exactly once; requests with their
// checksum taken off for editing and put back.

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <variant>
#include <vector>

#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace ferry::test {

// The decoded error reply in `wire`; fails the test if it is anything else.
inline protocol::error_reply expect_error_reply(const std::optional<std::vector<std::byte>>& wire,
                                                std::uint64_t* id = nullptr) {
  REQUIRE_MESSAGE(wire.has_value(), "expected an error reply, got nothing");
  auto r = codec::decode_reply(*wire);
  REQUIRE(r);
  auto* e = std::get_if<protocol::error_reply>(&r->body);
  REQUIRE(e != nullptr);
  if (id != nullptr) *id = r->hdr.request_id;
  return *e;
}

// Sends datagrams through one client and checks, against the server's counters, that each was
// received and accounted for exactly once.
struct traffic {
  running_server& srv;
  blocking_client& cli;
  // The client gets its address token first, so that the exchange counts no token traffic.
  bool validated = validate();
  counter_values before = srv.counter_snapshot();

  bool validate() {
    const auto out = srv.counters().datagrams_out.load();
    if (cli.token_replies() != 0) return true;
    (void)cli.token();
    // The server counts a datagram just after sending it: wait for the token reply and the
    // answer to the request that echoed it, or `before` would miss them.
    REQUIRE(wait_until([&] { return srv.counters().datagrams_out.load() >= out + 2; }));
    return true;
  }
  std::uint64_t sent = 0;  // datagrams sent, the final GET excluded

  void send(const std::vector<std::byte>& b) {
    cli.send_raw(b);
    ++sent;
  }
  // Waits until the server has taken in everything sent so far.
  void wait_received() {
    REQUIRE(wait_until(
        [&] { return srv.counters().datagrams_in.load() >= before.datagrams_in + sent; }));
  }
  // The next datagram must be an error reply to `id` with `code`.
  void expect_error(std::uint64_t id, protocol::errc code) {
    std::uint64_t got_id = 0;
    const auto e = expect_error_reply(cli.recv_raw(), &got_id);
    CHECK(e.code == code);
    REQUIRE(got_id == id);  // in order: none missing, none extra
  }
  // A normal GET right after. It must work, and since the server answers in order, any reply
  // to what came before would arrive ahead of its answer and show up as a stray datagram.
  void expect_served() {
    const auto stray = cli.stray();
    auto b = cli.get("f.txt", 0, 512);
    REQUIRE(b);
    CHECK(b->data == "still served");
    CHECK(cli.stray() == stray);
  }
  // Every datagram sent was received; `malformed` were dropped as malformed, `corrupt` as
  // corrupt, `truncated` as longer than any request; `answered` drew an error reply; plus the
  // final GET and its reply.
  void check_counters(std::uint64_t malformed, std::uint64_t corrupt, std::uint64_t answered,
                      std::uint64_t truncated = 0) {
    const auto want_out = before.datagrams_out + answered + 1;
    // The loop thread counts a datagram as sent just after handing it to the kernel.
    CHECK(wait_until([&] { return srv.counters().datagrams_out.load() >= want_out; }));
    const auto after = srv.counter_snapshot();
    CHECK(after.datagrams_in - before.datagrams_in == sent + 1);
    CHECK(after.dropped_malformed - before.dropped_malformed == malformed);
    CHECK(after.dropped_corrupt - before.dropped_corrupt == corrupt);
    CHECK(malformed + corrupt + truncated == sent);  // every datagram of the subcase was dropped
    CHECK(after.errors_sent - before.errors_sent == answered);
    CHECK(after.datagrams_out - before.datagrams_out == answered + 1);
    CHECK(after.get_requests - before.get_requests == 1);
    CHECK(after.list_requests == before.list_requests);
    CHECK(after.stat_requests == before.stat_requests);
    CHECK(after.dropped_truncated - before.dropped_truncated == truncated);
    CHECK(after.recv_errors == before.recv_errors);
    CHECK(after.internal_errors == before.internal_errors);
    CHECK(after.send_errors == before.send_errors);
    CHECK(cli.undecodable() == 0);
  }
};

// A request as encoded by the codec, without its trailing checksum, ready to be edited.
inline std::vector<std::byte> unsealed(std::uint64_t id, const protocol::request& req) {
  auto w = blocking_client::encode(id, req);
  strip_checksum(w);
  return w;
}

inline std::vector<std::byte> sealed(std::vector<std::byte> w) {
  append_checksum(w);
  return w;
}

}  // namespace ferry::test
