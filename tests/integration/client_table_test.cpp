// The table of validated clients cannot be filled to shut others out: one /24 holds at most
// max_clients_per_prefix of its places, and when the table is full the client heard from least
// recently makes room, so a new client is served at once. Real sockets on loopback addresses
// of several /24s (127.0.N.1), each validated with its own token, as an attacker who owns
// addresses would.

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/address.hpp"
#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/running_server.hpp"

namespace {

namespace proto = ferry::protocol;
using namespace ferry::test;
using namespace std::chrono_literals;

// One client address (a socket on `ip`, port chosen by the kernel) that asks for a token and
// then a STAT, and says whether the STAT was answered.
class source {
 public:
  explicit source(const char* ip) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, ip, &a.sin_addr) == 1);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
    timeval tv{0, 300'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~source() { ::close(fd_); }
  source(const source&) = delete;
  source& operator=(const source&) = delete;

  // True if the server answered a validated STAT of the root.
  bool served(const ferry::endpoint& server) {
    if (!token_) {
      send(server, blocking_client::encode(next_id_++, proto::stat_request{""}));
      auto r = receive();
      if (!r) return false;
      auto* t = std::get_if<proto::token_reply>(&r->body);
      if (t == nullptr) return false;
      token_ = t->token;
    }
    send(server, blocking_client::encode(next_id_++, proto::stat_request{""}, &*token_));
    auto r = receive();
    return r && std::holds_alternative<proto::stat_reply>(r->body);
  }

 private:
  void send(const ferry::endpoint& server, const std::vector<std::byte>& d) {
    REQUIRE(::sendto(fd_, d.data(), d.size(), 0, server.addr(), server.length) ==
            static_cast<ssize_t>(d.size()));
  }
  std::optional<ferry::codec::decoded_reply> receive() {
    const auto n = ::recv(fd_, buf_.data(), buf_.size(), 0);
    if (n <= 0) return std::nullopt;
    auto d = ferry::codec::decode_reply({buf_.data(), static_cast<std::size_t>(n)});
    if (!d) return std::nullopt;
    return *d;
  }

  int fd_ = -1;
  std::uint64_t next_id_ = 1;
  std::optional<proto::address_token> token_;
  std::vector<std::byte> buf_ = std::vector<std::byte>(2048);
};

}  // namespace

TEST_CASE("one /24 holds at most max_clients_per_prefix places; others are still served") {
  temp_dir root;
  running_server srv{root.path(), [](auto& c) {
                       c.max_clients = 64;
                       c.max_clients_per_prefix = 4;
                     }};
  std::vector<std::unique_ptr<source>> same_net;
  int served = 0;
  for (int i = 0; i < 8; ++i) {
    same_net.push_back(std::make_unique<source>("127.0.0.1"));
    served += same_net.back()->served(srv.endpoint()) ? 1 : 0;
  }
  CHECK(served == 4);
  CHECK(srv.counter_snapshot().prefix_full >= 4);
  // The first four keep their places.
  CHECK(same_net.front()->served(srv.endpoint()));
  source elsewhere{"127.0.7.1"};
  CHECK(elsewhere.served(srv.endpoint()));
}

TEST_CASE("a full table makes room for a new client: the least recently heard from goes") {
  temp_dir root;
  running_server srv{root.path(), [](auto& c) {
                       c.max_clients = 16;
                       c.max_clients_per_prefix = 4;
                     }};
  // Sixteen places held from four /24s, all active.
  std::vector<std::unique_ptr<source>> holders;
  for (int net = 1; net <= 4; ++net)
    for (int i = 0; i < 4; ++i) {
      holders.push_back(std::make_unique<source>(fmt::format("127.0.{}.1", net).c_str()));
      REQUIRE(holders.back()->served(srv.endpoint()));
    }
  CHECK(srv.counter_snapshot().clients_evicted == 0);
  const auto t0 = std::chrono::steady_clock::now();
  source newcomer{"127.0.9.1"};
  CHECK(newcomer.served(srv.endpoint()));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(srv.counter_snapshot().clients_evicted == 1);
  // The one that made room was the first heard from; its token still holds (tokens keep no
  // state), so it is served again, in the place of the next least recently heard from.
  CHECK(holders.front()->served(srv.endpoint()));
  CHECK(srv.counter_snapshot().clients_evicted == 2);
}

TEST_CASE("IPv4 clients of a server bound to :: are counted by their own /24") {
  temp_dir root;
  running_server srv{root.path(), [](auto& c) {
                       c.bind = "::";
                       c.max_clients = 64;
                       c.max_clients_per_prefix = 4;
                     }};
  // They arrive as ::ffff:127.0.N.1, whose first 56 bits are all zero.
  std::string why;
  const auto hp = ferry::parse_host_port(fmt::format("127.0.0.1:{}", srv.endpoint().port()), why);
  REQUIRE(hp);
  const auto v4 = ferry::resolve(*hp, why);
  REQUIRE(v4);
  std::vector<std::unique_ptr<source>> same_net;
  int served = 0;
  for (int i = 0; i < 6; ++i) {
    same_net.push_back(std::make_unique<source>("127.0.0.1"));
    served += same_net.back()->served(*v4) ? 1 : 0;
  }
  CHECK(served == 4);
  source elsewhere{"127.0.7.1"};
  CHECK(elsewhere.served(*v4));
}
