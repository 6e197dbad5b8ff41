// Replay-proof address validation, against a real server on a real socket: a live client is
// handed fresh tokens before its own expire, and a real client's requests, captured and sent
// again later from its own address and port through a raw socket (as a spoofer would), draw at
// most three times their bytes (PROTOCOL.md, "Address validation").
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "client/connection.hpp"
#include "client/fetch.hpp"
#include "common/codec.hpp"
#include "support/running_server.hpp"
#include "support/udp_relay.hpp"

namespace {

namespace proto = ferry::protocol;
using namespace ferry::test;
using namespace std::chrono_literals;
using bytes = std::vector<std::byte>;

// Sends UDP datagrams with any IPv4 source address and port, as a spoofer does (CAP_NET_RAW).
class spoofer {
 public:
  spoofer() : fd_{::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW)} {}
  ~spoofer() {
    if (fd_ >= 0) ::close(fd_);
  }
  spoofer(const spoofer&) = delete;
  spoofer& operator=(const spoofer&) = delete;
  [[nodiscard]] bool usable() const noexcept { return fd_ >= 0; }

  void send(const ferry::endpoint& from, const ferry::endpoint& to, std::span<const std::byte> b) {
    const auto& src = *reinterpret_cast<const sockaddr_in*>(from.addr());
    const auto& dst = *reinterpret_cast<const sockaddr_in*>(to.addr());
    bytes packet(sizeof(iphdr) + sizeof(udphdr) + b.size());
    iphdr ip{};
    ip.version = 4;
    ip.ihl = 5;
    ip.ttl = 64;
    ip.protocol = IPPROTO_UDP;
    ip.tot_len = htons(static_cast<std::uint16_t>(packet.size()));
    ip.saddr = src.sin_addr.s_addr;
    ip.daddr = dst.sin_addr.s_addr;
    udphdr udp{};
    udp.source = src.sin_port;
    udp.dest = dst.sin_port;
    udp.len = htons(static_cast<std::uint16_t>(sizeof(udphdr) + b.size()));
    udp.check = 0;  // optional over IPv4; the kernel fills in the IP checksum
    std::memcpy(packet.data(), &ip, sizeof ip);
    std::memcpy(packet.data() + sizeof ip, &udp, sizeof udp);
    std::memcpy(packet.data() + sizeof ip + sizeof udp, b.data(), b.size());
    REQUIRE(::sendto(fd_, packet.data(), packet.size(), 0, to.addr(), to.length) ==
            static_cast<ssize_t>(packet.size()));
  }

 private:
  int fd_;
};

// A socket bound to the address and port the client had, to see what the server sends there.
class victim {
 public:
  explicit victim(const ferry::endpoint& at)
      : fd_{::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)} {
    REQUIRE(fd_ >= 0);
    REQUIRE(::bind(fd_, at.addr(), at.length) == 0);
  }
  ~victim() { ::close(fd_); }
  victim(const victim&) = delete;
  victim& operator=(const victim&) = delete;

  // Reads until `quiet` passes without a datagram; counts bytes and data replies.
  void drain(std::chrono::milliseconds quiet) {
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(quiet.count())) <= 0) return;
      bytes buf(proto::max_datagram);
      const auto n = ::recv(fd_, buf.data(), buf.size(), 0);
      if (n <= 0) continue;
      buf.resize(static_cast<std::size_t>(n));
      received += buf.size();
      auto r = ferry::codec::decode_reply(buf);
      if (r && std::holds_alternative<proto::data_reply>(r->body)) ++data_replies;
    }
  }
  std::uint64_t received = 0, data_replies = 0;

 private:
  int fd_;
};

// Windows short enough for a test: tokens then live 500 ms to 1 s in the first case, and 1 to
// 2 s in the second, long enough for a replay at once to find them valid on a loaded machine.
constexpr std::uint64_t refresh_window_ms = 500, replay_window_ms = 1000;

}  // namespace

TEST_SUITE("integration") {
  TEST_CASE("a client that keeps asking is handed fresh tokens, and never a token reply") {
    temp_dir root;
    root.write("a.txt", "hello\n");
    running_server srv{root.path(),
                       [](ferry::server::config& c) { c.token_window_ms = refresh_window_ms; }};
    blocking_client cl{srv.endpoint(), 1000ms};
    auto token = cl.token();  // the first contact's token reply
    std::uint64_t answered = 0, token_replies = 0, refreshes = 0;
    // A STAT every 50 ms for six windows: each window sees several, so each old token is
    // replaced before it expires, unless the machine stalls this thread for a whole window.
    using steady = std::chrono::steady_clock;
    const auto end = steady::now() + 6 * std::chrono::milliseconds{refresh_window_ms};
    auto last = steady::now();
    steady::duration longest_gap{};
    while (steady::now() < end) {
      longest_gap = std::max(longest_gap, steady::now() - last);
      last = steady::now();
      const auto id = cl.next_id();
      cl.send_raw(blocking_client::encode(id, proto::stat_request{"a.txt"}, &token));
      for (;;) {
        auto got = cl.recv_raw();
        REQUIRE(got);
        auto r = ferry::codec::decode_reply(*got);
        REQUIRE(r);
        if (const auto* t = std::get_if<proto::token_reply>(&r->body)) {
          token = t->token;
          if (r->hdr.request_id == 0) {
            ++refreshes;
            continue;
          }
          ++token_replies;
          break;
        }
        if (r->hdr.request_id == id) {
          ++answered;
          break;
        }
      }
      std::this_thread::sleep_for(50ms);
    }
    const auto gap_ms = std::chrono::duration_cast<std::chrono::milliseconds>(longest_gap).count();
    MESSAGE(answered << " answered, " << refreshes << " refreshes, " << token_replies
                     << " token replies; longest gap between requests " << gap_ms << " ms");
    CHECK(refreshes >= 4);
    CHECK(answered >= 20);
    if (gap_ms < static_cast<std::int64_t>(refresh_window_ms) / 2) CHECK(token_replies == 0);
  }

  TEST_CASE("a real client's requests replayed from its own address later draw only tokens") {
    spoofer raw;
    if (!raw.usable()) {
      FAIL_CHECK("a raw socket needs CAP_NET_RAW: run the suite as root, as CI does");
      return;
    }
    temp_dir root;
    root.write_random("f.bin", 4 << 20, 2);
    running_server srv{root.path(),
                       [](ferry::server::config& c) { c.token_window_ms = replay_window_ms; }};
    std::vector<bytes> recorded;
    ferry::endpoint client_at;
    {
      udp_relay relay{srv.endpoint()};
      relay.record_requests();
      client_at = relay.source();
      ferry::client::connection conn{relay.endpoint()};
      auto res = ferry::client::fetcher{conn, "f.bin", root / "copy.bin", {}}.run();
      CHECK(res.size == 4u << 20);
      recorded = relay.recorded();
    }
    REQUIRE(recorded.size() >= 4);
    // The client is gone; its port is free again, for a socket that sees what would reach it.
    victim at_client{client_at};
    // Replayed at once, the latest tokens still hold and draw blocks: the raw socket does reach
    // the server as the client, so the check after the wait can fail.
    for (const auto& d : recorded) raw.send(client_at, srv.endpoint(), d);
    at_client.drain(100ms);
    MESSAGE("replayed at once: " << at_client.data_replies << " data replies");
    CHECK(at_client.data_replies > 0);
    // Two windows later every token has expired.
    std::this_thread::sleep_for(std::chrono::milliseconds{2 * replay_window_ms + 100});
    at_client.drain(50ms);
    at_client.received = at_client.data_replies = 0;
    const auto before = srv.counter_snapshot();
    std::uint64_t sent = 0;
    for (const auto& d : recorded) {
      raw.send(client_at, srv.endpoint(), d);
      sent += d.size();
    }
    wait_until([&] {
      return srv.counters().datagrams_in.load() >= before.datagrams_in + recorded.size();
    });
    at_client.drain(200ms);
    const auto after = srv.counter_snapshot();
    MESSAGE("replayed " << recorded.size() << " datagrams, " << sent << " bytes, "
                        << 2 * replay_window_ms << " ms later: " << at_client.received
                        << " bytes back");
    CHECK(at_client.data_replies == 0);
    CHECK(at_client.received <= proto::amplification_limit * sent);
    CHECK(after.get_requests == before.get_requests);
    CHECK(after.bytes_out - before.bytes_out <=
          proto::amplification_limit * (after.bytes_in - before.bytes_in));
  }
}
