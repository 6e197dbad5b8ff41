// The pre-shared key end to end (PROTOCOL.md, "Pre-shared key"): a real ferryd with a key and
// the client library with and without it, on loopback; and an on-path forger between them.

#include <doctest/doctest.h>

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/fetch.hpp"
#include "client/keying.hpp"
#include "common/envelope.hpp"
#include "support/codec_wire.hpp"
#include "support/fetch_once.hpp"
#include "support/keys.hpp"
#include "support/running_server.hpp"
#include "support/udp_relay.hpp"

using namespace ferry;
using namespace ferry::test;
using envelope::mode;
using protocol::errc;

namespace {

// The process's key for the client library, for one test: none again at the end.
struct key_in_use {
  key_in_use(std::shared_ptr<const envelope::key> k, mode m) { client::use_key({std::move(k), m}); }
  ~key_in_use() { client::use_key({}); }
  key_in_use(const key_in_use&) = delete;
  key_in_use& operator=(const key_in_use&) = delete;
};

running_server::tweak with_key(std::shared_ptr<const envelope::key> k, bool encrypt) {
  return [k = std::move(k), encrypt](server::config& c) {
    c.key = k;
    c.encrypt = encrypt;
  };
}

// A STAT of `path`, plain or sealed with `sealer` in `m`, as a client that was never validated
// sends it.
std::vector<std::byte> stat_datagram(std::uint64_t id, envelope::sealer* sealer, mode m) {
  auto w = blocking_client::encode(id, protocol::stat_request{"f.bin"});
  if (sealer == nullptr) return w;
  const auto n = w.size();
  w.resize(n + envelope::trailer_size(m));
  w.resize(sealer->seal(w, n, m));
  return w;
}

// Fetches f.bin from `server` and expects the fetch to end with exit code 7 and `why` in its
// message, and no output file.
void expect_auth_failure(const endpoint& server, const std::string& why) {
  client::connection conn{server};
  temp_dir out;
  try {
    (void)client::fetcher{conn, "f.bin", out / "f.bin", {}}.run();
    FAIL("the fetch should have been refused");
  } catch (const client::failure& f) {
    CHECK(f.code() == client::exit_code::auth);
    CHECK(std::string{f.what()}.find(why) != std::string::npos);
  }
  CHECK(!std::filesystem::exists(out / "f.bin"));
}

}  // namespace

TEST_SUITE_BEGIN("key");

TEST_CASE("with the key, a file comes whole in either mode, and every reply is sealed") {
  temp_dir root;
  const auto content = root.write_random("f.bin", 3'000'000 + 17, 7);
  temp_dir out;
  for (const bool encrypt : {false, true}) {
    CAPTURE(encrypt);
    auto k = key_of(1);
    running_server srv{root.path(), with_key(k, encrypt)};
    key_in_use use{k, encrypt ? mode::aead : mode::mac};
    client::connection conn{srv.endpoint()};
    const auto dest = out / (encrypt ? "aead.bin" : "mac.bin");
    auto r = client::fetcher{conn, "f.bin", dest, {}}.run();
    CHECK(r.size == content.size());
    CHECK(read_file(dest) == content);
    CHECK(conn.unauthenticated() == 0);
    const auto c = srv.counter_snapshot();
    CHECK(c.unauthenticated == 0);
    CHECK(c.dropped_unauthenticated == 0);
    CHECK(c.internal_errors == 0);
  }
}

TEST_CASE("a client without the key is told so, unsealed, within the amplification limit") {
  temp_dir root;
  root.write("f.bin", "secret");
  auto k = key_of(1);
  running_server srv{root.path(), with_key(k, false)};
  blocking_client raw{srv.endpoint()};
  const auto req = stat_datagram(501, nullptr, mode::plain);
  raw.send_raw(req);
  auto got = raw.recv_raw();
  REQUIRE(got);
  CHECK(got->size() <= 3 * req.size());
  auto reply = codec::decode_reply(*got);
  REQUIRE(reply);
  CHECK(reply->hdr.request_id == 501);
  auto* e = std::get_if<protocol::error_reply>(&reply->body);
  REQUIRE(e != nullptr);
  CHECK(e->code == errc::authentication_required);
  CHECK(e->message.find("needs a key") != std::string::npos);
  CHECK(srv.counter_snapshot().unauthenticated == 1);

  // And through the client library: exit code 7, with the server's reason.
  expect_auth_failure(srv.endpoint(), "needs a key");
}

TEST_CASE("another mode is answered sealed as asked, and another key not at all") {
  temp_dir root;
  root.write("f.bin", "secret");
  auto k = key_of(1);
  running_server srv{root.path(), with_key(k, true)};
  blocking_client raw{srv.endpoint(), std::chrono::milliseconds{300}};

  envelope::sealer right{k};
  raw.send_raw(stat_datagram(601, &right, mode::mac));
  auto got = raw.recv_raw();
  REQUIRE(got);
  CHECK(envelope::mode_of(*got) == mode::mac);
  auto opened = right.open(*got);
  REQUIRE(opened.why == envelope::refusal::none);
  auto reply = codec::decode_reply(opened.plain);
  REQUIRE(reply);
  auto* e = std::get_if<protocol::error_reply>(&reply->body);
  REQUIRE(e != nullptr);
  CHECK(e->code == errc::authentication_required);
  CHECK(e->message.find("encrypts") != std::string::npos);

  envelope::sealer wrong{key_of(2)};
  for (auto m : {mode::mac, mode::aead}) raw.send_raw(stat_datagram(602, &wrong, m));
  CHECK(!raw.recv_raw());
  const auto c = srv.counter_snapshot();
  CHECK(c.dropped_unauthenticated == 2);
  CHECK(c.unauthenticated == 1);
  CHECK(c.errors_sent == 1);
}

TEST_CASE("a server without a key tells a client with one") {
  temp_dir root;
  root.write("f.bin", "open");
  running_server srv{root.path()};
  auto k = key_of(1);
  key_in_use use{k, mode::mac};
  expect_auth_failure(srv.endpoint(), "has no key");
}

TEST_CASE("blocks an on-path forger alters are dropped and asked for again") {
  temp_dir root;
  const auto content = root.write_random("f.bin", 2'000'000, 11);
  for (const bool encrypt : {false, true}) {
    CAPTURE(encrypt);
    auto k = key_of(1);
    running_server srv{root.path(), with_key(k, encrypt)};
    udp_relay forger{srv.endpoint()};
    forger.tamper_every(5);
    key_in_use use{k, encrypt ? mode::aead : mode::mac};
    client::connection conn{forger.endpoint()};
    temp_dir out;
    auto r = client::fetcher{conn, "f.bin", out / "f.bin", {}}.run();
    CHECK(r.size == content.size());
    CHECK(read_file(out / "f.bin") == content);
    CHECK(forger.tampered() > 0);
    // Altered blocks were refused by their seal (those that reached the client before the fetch
    // ended), none by the checksum alone.
    CHECK(conn.unauthenticated() > 0);
    CHECK(conn.unauthenticated() <= forger.tampered());
    CHECK(conn.malformed() == 0);
  }
}

TEST_CASE("what the gate cannot open or must not answer draws the usual answer, or none") {
  temp_dir root;
  root.write("f.bin", "x");
  SUBCASE("a server without a key") {
    running_server srv{root.path()};
    blocking_client raw{srv.endpoint(), std::chrono::milliseconds{300}};
    envelope::sealer s{key_of(1)};
    // Encrypted: unreadable, so dropped unanswered.
    raw.send_raw(stat_datagram(701, &s, mode::aead));
    CHECK(!raw.recv_raw());
    // Flagged as sealed with a MAC, but too short to hold a header and a tag: dropped.
    for (std::size_t n : {std::size_t{16}, std::size_t{17}, std::size_t{31}, std::size_t{55}}) {
      auto w = stat_datagram(702, nullptr, mode::plain);
      w.resize(n);
      w[7] = std::byte{envelope::flag_mac};
      raw.send_raw(w);
    }
    CHECK(!raw.recv_raw());
    const auto c = srv.counter_snapshot();
    CHECK(c.dropped_malformed == 5);
    CHECK(c.unauthenticated == 0);
    CHECK(c.internal_errors == 0);
  }
  SUBCASE("a server with a key") {
    running_server srv{root.path(), with_key(key_of(1), false)};
    blocking_client raw{srv.endpoint(), std::chrono::milliseconds{300}};
    // A request of another version learns only that, as at any server.
    auto other = stat_datagram(801, nullptr, mode::plain);
    other[4] = std::byte{3};
    raw.send_raw(other);
    auto got = raw.recv_raw();
    REQUIRE(got);
    auto reply = codec::decode_reply(*got);
    REQUIRE(reply);
    auto* e = std::get_if<protocol::error_reply>(&reply->body);
    REQUIRE(e != nullptr);
    CHECK(e->code == errc::unsupported_version);
    // A damaged request draws nothing, and neither does a reply-typed datagram.
    auto damaged = stat_datagram(802, nullptr, mode::plain);
    damaged[10] ^= std::byte{1};
    raw.send_raw(damaged);
    auto reply_typed = stat_datagram(803, nullptr, mode::plain);
    reply_typed[5] = std::byte{0x82};
    REQUIRE(reseal(reply_typed));  // whole, so that only its type keeps it from an answer
    raw.send_raw(reply_typed);
    CHECK(!raw.recv_raw());
    const auto c = srv.counter_snapshot();
    CHECK(c.dropped_corrupt == 1);
    CHECK(c.dropped_malformed == 2);
    CHECK(c.unauthenticated == 0);
  }
}
