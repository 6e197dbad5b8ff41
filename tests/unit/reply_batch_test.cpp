// Unit tests for the server's reply batch, through a sink that records what would have been
// sent: UDP GSO grouping by client and size, the fallback when the kernel refuses GSO, and
// what a full socket buffer leaves to the send queue. Every reply sent must decode.

#include "server/reply_batch.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <utility>
#include <vector>

#include "common/codec.hpp"
#include "support/endpoints.hpp"

namespace {

using namespace ferry;
using namespace ferry::server;

endpoint v4(std::uint16_t port) { return test::v4(0x7f000001, port); }

// What one message carried: to whom, its bytes, and its GSO segment size (0: one datagram).
struct message {
  std::uint16_t port = 0;
  std::vector<std::byte> bytes;
  std::size_t segment = 0;
};

// The segment size a UDP_SEGMENT control message asks for, or 0.
std::size_t segment_of(msghdr& h) {
  if (h.msg_control == nullptr) return 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&h); cm != nullptr; cm = CMSG_NXTHDR(&h, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT) {
      std::uint16_t seg = 0;
      std::memcpy(&seg, CMSG_DATA(cm), sizeof seg);
      return seg;
    }
  }
  return 0;
}

class recording_sink final : public reply_sink {
 public:
  // Answers to the next send_messages calls: how many went (-1: fail with the errno given).
  std::deque<std::pair<int, int>> script;
  std::vector<message> sent;
  std::vector<std::pair<std::uint16_t, std::size_t>> kept;  // port, bytes
  std::vector<std::uint16_t> refused;

  int send_messages(std::span<mmsghdr> msgs) noexcept override {
    int n = static_cast<int>(msgs.size());
    if (!script.empty()) {
      const auto [count, err] = script.front();
      script.pop_front();
      if (count < 0) {
        errno = err;
        return -1;
      }
      n = std::min(n, count);
    }
    for (int i = 0; i < n; ++i) {
      auto& h = msgs[static_cast<std::size_t>(i)].msg_hdr;
      message m;
      m.port = endpoint::from(static_cast<const sockaddr*>(h.msg_name)).port();
      for (std::size_t k = 0; k < h.msg_iovlen; ++k) {
        const auto* p = static_cast<const std::byte*>(h.msg_iov[k].iov_base);
        m.bytes.insert(m.bytes.end(), p, p + h.msg_iov[k].iov_len);
      }
      m.segment = segment_of(h);
      sent.push_back(std::move(m));
    }
    return n;
  }
  void keep(const endpoint& peer, std::span<const iovec>, std::size_t total) noexcept override {
    kept.emplace_back(peer.port(), total);
  }
  void gso_refused(const peer_key& key) noexcept override {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_port, &key.bytes[5], 2);
    refused.push_back(ntohs(sin.sin_port));
  }
};

struct harness {
  stats counters;
  shared_token_bucket total{0, 0};
  recording_sink sink;
  reply_batch batch{sink, total, counters};
  std::vector<client_state> clients;

  client_state client(std::uint16_t port) {
    client_state c;
    c.peer = v4(port);
    c.key = peer_key::of(c.peer.addr());
    return c;
  }
  // Adds a reply of `length` payload bytes, each byte `fill`.
  void add(const client_state& c, std::uint64_t id, std::uint32_t length, std::uint8_t fill) {
    std::byte* slot = batch.payload_slot(length);
    std::memset(slot, fill, length);
    read_outcome r;
    r.length = length;
    r.version.size = std::uint64_t{1} << 40;  // long enough for every block asked for
    batch.add(c, id, id * length, r);
  }
};

// The datagrams of a message: GSO segments cut at `segment` bytes, the last maybe shorter.
std::vector<std::vector<std::byte>> datagrams_of(const message& m) {
  std::vector<std::vector<std::byte>> out;
  const auto seg = m.segment == 0 ? m.bytes.size() : m.segment;
  for (std::size_t at = 0; at < m.bytes.size(); at += seg)
    out.emplace_back(
        m.bytes.begin() + static_cast<std::ptrdiff_t>(at),
        m.bytes.begin() + static_cast<std::ptrdiff_t>(std::min(at + seg, m.bytes.size())));
  return out;
}

}  // namespace

TEST_CASE("equal replies to one client go as one GSO send; each client gets its own") {
  harness h;
  const auto a = h.client(1000), b = h.client(2000);
  h.add(a, 1, 1000, 0xa1);
  h.add(b, 2, 1000, 0xb2);
  h.add(a, 3, 1000, 0xa3);
  h.add(a, 4, 400, 0xa4);  // a shorter last segment is allowed
  h.batch.flush();
  REQUIRE(h.sink.sent.size() == 2);
  const auto& to_a = h.sink.sent[0].port == 1000 ? h.sink.sent[0] : h.sink.sent[1];
  const auto& to_b = h.sink.sent[0].port == 1000 ? h.sink.sent[1] : h.sink.sent[0];
  CHECK(to_a.segment == protocol::data_reply_overhead + 1000);
  CHECK(to_b.segment == 0);
  const auto parts = datagrams_of(to_a);
  REQUIRE(parts.size() == 3);
  // Each datagram decodes as the reply it was, in the order added.
  const std::uint64_t ids[] = {1, 3, 4};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    auto d = codec::decode_reply(parts[i]);
    REQUIRE(d);
    CHECK(d->hdr.request_id == ids[i]);
  }
  CHECK(h.counters.gso_sends == 1);
  CHECK(h.counters.datagrams_out == 4);
  CHECK(h.batch.empty());
}

TEST_CASE("a refused GSO send is sent again one datagram at a time") {
  harness h;
  const auto a = h.client(1000);
  for (std::uint64_t id = 1; id <= 3; ++id) h.add(a, id, 500, 0x11);
  SUBCASE("EMSGSIZE: not for this client, but still for others") {
    h.sink.script.push_back({-1, EMSGSIZE});
    h.batch.flush();
    CHECK(h.sink.refused == std::vector<std::uint16_t>{1000});
    CHECK(h.sink.sent.size() == 3);
    for (const auto& m : h.sink.sent) CHECK(m.segment == 0);
    // The batch itself still groups for a client whose flag is still set.
    const auto b = h.client(2000);
    h.add(b, 7, 500, 1);
    h.add(b, 8, 500, 1);
    h.batch.flush();
    CHECK(h.sink.sent.back().segment != 0);
  }
  SUBCASE("EIO: no GSO at all from now on") {
    h.sink.script.push_back({-1, EIO});
    h.batch.flush();
    CHECK(h.sink.sent.size() == 3);
    const auto b = h.client(2000);
    h.add(b, 7, 500, 1);
    h.add(b, 8, 500, 1);
    h.batch.flush();
    CHECK(h.sink.sent.size() == 5);
    CHECK(h.sink.sent.back().segment == 0);
  }
  CHECK(h.counters.gso_refused == 1);
  CHECK(h.sink.kept.empty());
}

TEST_CASE("what a full socket buffer does not take goes to the send queue, in order") {
  harness h;
  client_state a = h.client(1000), b = h.client(2000);
  a.gso = b.gso = false;  // one message a reply
  h.add(a, 1, 100, 1);
  h.add(a, 2, 100, 1);
  h.add(b, 3, 100, 1);
  h.sink.script.push_back({1, 0});        // one message goes,
  h.sink.script.push_back({-1, EAGAIN});  // then the buffer is full
  h.batch.flush();
  CHECK(h.sink.sent.size() == 1);
  REQUIRE(h.sink.kept.size() == 2);
  CHECK(h.sink.kept[0].first == 1000);
  CHECK(h.sink.kept[1].first == 2000);
  CHECK(h.sink.kept[0].second == protocol::data_reply_overhead + 100);
}

TEST_CASE("another send error loses one message and the rest still go") {
  harness h;
  client_state a = h.client(1000), b = h.client(2000);
  h.add(a, 1, 100, 1);
  h.add(b, 2, 100, 1);
  h.sink.script.push_back({-1, ENETUNREACH});
  h.batch.flush();
  CHECK(h.counters.send_errors == 1);
  REQUIRE(h.sink.sent.size() == 1);
  CHECK(h.sink.sent[0].port == 2000);
}

TEST_CASE("a full batch is sent before the next reply is read into it") {
  harness h;
  const auto a = h.client(1000);
  for (std::uint64_t id = 0; id < reply_batch::max_replies; ++id) h.add(a, id, 10, 1);
  CHECK(h.sink.sent.empty());
  h.add(a, 99, 10, 1);  // no room left: the first 64 go first
  CHECK(h.counters.datagrams_out == reply_batch::max_replies);
  CHECK_FALSE(h.batch.empty());
  // Large blocks fill the bytes before the count.
  harness big;
  const auto c = big.client(1000);
  const std::uint32_t block = 65'000;
  const auto fit = reply_batch::capacity / (protocol::data_reply_overhead + block);
  for (std::uint64_t id = 0; id < fit; ++id) big.add(c, id, block, 2);
  CHECK(big.sink.sent.empty());
  big.add(c, 100, block, 2);
  CHECK(big.counters.datagrams_out == fit);
}
