#include "support/udp_relay.hpp"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <vector>

#include "common/codec.hpp"
#include "server/server_socket.hpp"
#include "support/loopback.hpp"

namespace ferry::test {

namespace {
void grow_buffers(int fd) {
  const int want = 8 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0)
    (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
}
}  // namespace

udp_relay::udp_relay(const ::ferry::endpoint& server) {
  front_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  back_ = ::socket(server.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  wake_ = ::eventfd(0, EFD_CLOEXEC);
  REQUIRE(front_ >= 0);
  REQUIRE(back_ >= 0);
  REQUIRE(wake_ >= 0);
  grow_buffers(front_);
  grow_buffers(back_);
  front_endpoint_ = bind_loopback(front_);
  REQUIRE(::connect(back_, server.addr(), server.length) == 0);
  thread_ = std::thread{[this] { run(); }};
}

udp_relay::~udp_relay() {
  wake(wake_);
  if (thread_.joinable()) thread_.join();
  ::close(front_);
  ::close(back_);
  ::close(wake_);
}

void udp_relay::cut_after_data_replies(std::uint64_t n) noexcept {
  limit_ = n;
  if (data_forwarded_ >= n) cut_ = true;
}

std::vector<std::vector<std::byte>> udp_relay::recorded() const {
  std::lock_guard lock{recorded_mutex_};
  return recorded_;
}

void udp_relay::restore() noexcept {
  limit_ = std::numeric_limits<std::uint64_t>::max();
  cut_ = false;
}

void udp_relay::run() noexcept {
  std::vector<std::byte> buf(65536);
  sockaddr_storage client{};
  socklen_t client_len = 0;
  for (;;) {
    pollfd fds[3] = {{front_, POLLIN, 0}, {back_, POLLIN, 0}, {wake_, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[2].revents != 0) return;
    if (fds[0].revents & POLLIN) {
      sockaddr_storage from{};
      socklen_t from_len = sizeof from;
      const ssize_t n = ::recvfrom(front_, buf.data(), buf.size(), MSG_DONTWAIT,
                                   reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n >= 0) {
        client = from;
        client_len = from_len;
        (void)::send(back_, buf.data(), static_cast<std::size_t>(n), MSG_DONTWAIT);
        if (recording_) {
          try {
            std::lock_guard lock{recorded_mutex_};
            recorded_.emplace_back(buf.begin(), buf.begin() + n);
          } catch (...) {
          }
        }
      }
    }
    if (fds[1].revents & (POLLIN | POLLERR)) {
      // A stopped server shows up as ECONNREFUSED here; that is just loss to the client.
      const ssize_t n = ::recv(back_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 || client_len == 0) continue;
      if (cut_) {
        ++dropped_;
        continue;
      }
      const auto bytes = std::span<const std::byte>{buf.data(), static_cast<std::size_t>(n)};
      auto h = codec::decode_header(bytes);
      const auto every = tamper_every_.load();
      if (h && h->type == protocol::msg_type::data_reply && every != 0 &&
          (data_forwarded_ + 1) % every == 0) {
        buf[bytes.size() / 2] ^= std::byte{0x5a};
        ++tampered_;
      }
      (void)::sendto(front_, buf.data(), bytes.size(), MSG_DONTWAIT,
                     reinterpret_cast<const sockaddr*>(&client), client_len);
      if (h && h->type == protocol::msg_type::data_reply) {
        if (++data_forwarded_ >= limit_) cut_ = true;
      }
    }
  }
}

::ferry::endpoint udp_relay::source() const { return server::bound_endpoint(back_); }

}  // namespace ferry::test
