// A client of protocol version 2 against a server of another version: the server's
// unsupported_version error, written in its own version, ends the command at once with the
// refusal and a hint, instead of a wait for the timeout.

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/connection.hpp"
#include "client/errors.hpp"
#include "client/fetch.hpp"
#include "common/codec.hpp"
#include "common/protocol.hpp"
#include "support/loopback.hpp"

namespace proto = ferry::protocol;
using ferry::client::exit_code;
using ferry::client::failure;

TEST_SUITE_BEGIN("client");

TEST_CASE("a server of another protocol version is named at once, not waited for") {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const auto server = ferry::test::bind_loopback(fd);
  // The old server: every datagram draws unsupported_version, in version 1, with its id.
  std::jthread old_server{[fd](std::stop_token stop) {
    std::byte in[2048], out[512];
    while (!stop.stop_requested()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      sockaddr_storage from{};
      socklen_t len = sizeof from;
      const auto n = ::recvfrom(fd, in, sizeof in, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < static_cast<ssize_t>(proto::header_size)) continue;
      const auto id = ferry::codec::peek_request_id({in, static_cast<std::size_t>(n)});
      auto w = ferry::codec::encode_reply(
          out, id, proto::error_reply{proto::errc::unsupported_version, "version 1 only"});
      if (!w) continue;
      out[4] = std::byte{1};
      const auto sum = XXH3_64bits(out, *w - proto::checksum_size);
      for (std::size_t i = 0; i < 8; ++i)
        out[*w - proto::checksum_size + i] = std::byte((sum >> (8 * i)) & 0xff);
      (void)::sendto(fd, out, *w, 0, reinterpret_cast<const sockaddr*>(&from), len);
    }
  }};
  ferry::client::connection conn{server};
  const auto start = std::chrono::steady_clock::now();
  std::optional<failure> got;
  try {
    (void)ferry::client::stat_with_digest(conn, "f", std::chrono::seconds{5});
  } catch (const failure& f) {
    got = f;
  }
  REQUIRE(got);
  CHECK(got->code() == exit_code::refused);
  CHECK(std::string{got->what()}.find("another version of the ferry protocol") !=
        std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds{2});
  old_server.request_stop();
  old_server.join();
  ::close(fd);
}

TEST_SUITE_END();
