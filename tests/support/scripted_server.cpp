#include "support/scripted_server.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "support/loopback.hpp"

namespace ferry::test {

scripted_server::scripted_server(script s) : script_{std::move(s)} {
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  wake_ = ::eventfd(0, EFD_CLOEXEC);
  REQUIRE(fd_ >= 0);
  REQUIRE(wake_ >= 0);
  endpoint_ = bind_loopback(fd_);
  thread_ = std::thread{[this] { run(); }};
}

scripted_server::~scripted_server() {
  wake(wake_);
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
  ::close(wake_);
}

void scripted_server::run() noexcept {
  std::vector<std::byte> in(65536), out(65536);
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = ::recvfrom(fd_, in.data(), in.size(), MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n <= 0) continue;
    auto req = codec::decode_request({in.data(), static_cast<std::size_t>(n)});
    if (!req) continue;
    std::optional<protocol::reply> reply;
    try {
      reply = script_(*req, requests_++);
    } catch (...) {
      continue;
    }
    if (!reply) continue;
    auto len = codec::encode_reply(out, req->hdr.request_id, *reply);
    if (!len) continue;
    (void)::sendto(fd_, out.data(), *len, MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&from),
                   from_len);
  }
}

}  // namespace ferry::test
