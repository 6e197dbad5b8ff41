#include "server/server_socket.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/log.hpp"

namespace ferry::server {

unique_fd open_server_socket(const config& cfg) {
  std::string why;
  auto ep = resolve(host_port{cfg.bind, cfg.port}, why);
  if (!ep) throw std::runtime_error{fmt::format("cannot bind '{}': {}", cfg.bind, why)};
  // The server owns its socket rather than a uv_udp_t, to read and serve in batches.
  const int fd = ::socket(ep->family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    throw std::runtime_error{fmt::format("cannot open a UDP socket: {}", std::strerror(errno))};
  unique_fd sock{fd};
  if (ep->family() == AF_INET6) {
    // "--bind ::" serves IPv4 too, whatever the system's default says.
    const int off = 0;
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  }
  const int on = 1;
  if (cfg.share_port == port_sharing::any &&
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    throw std::runtime_error{fmt::format("cannot share a port: {}", std::strerror(errno))};
  if (::bind(fd, ep->addr(), ep->length) != 0) {
    const int err = errno;
    const char* hint = err == EADDRINUSE && cfg.share_port == port_sharing::any
                           ? " (held by a ferryd without --reuseport, or by another user)"
                       : err == EADDRINUSE ? " (is another ferryd running? choose another --port)"
                       : err == EADDRNOTAVAIL ? " (that address is not on this machine)"
                       : err == EACCES        ? " (ports below 1024 need privileges)"
                                              : "";
    throw std::runtime_error{
        fmt::format("cannot bind {}: {}{}", to_string(*ep), std::strerror(err), hint)};
  }
  // Set after the bind, SO_REUSEPORT still lets later sockets join this one, while the bind
  // itself refused a busy port. For port 0 it matters too: with the option set, the kernel may
  // pick a port that another sharing group of the same user holds.
  if (cfg.share_port == port_sharing::later &&
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0)
    throw std::runtime_error{fmt::format("cannot share a port: {}", std::strerror(errno))};
  // A client's runs of GETs, sent with UDP GSO, then arrive as one buffer each rather than one
  // datagram each. A kernel without it delivers them one by one, which works as well.
  (void)::setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on);
  // Replies are never IP-fragmented. A block the path cannot carry whole is better lost whole:
  // one lost fragment would lose it anyway, and the client, seeing no block arrive, asks for
  // smaller ones (docs/PROTOCOL.md, Sizes).
  const int dont_fragment = IP_PMTUDISC_DO;
  (void)::setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &dont_fragment, sizeof dont_fragment);
  if (ep->family() == AF_INET6) {
    const int v6 = IPV6_PMTUDISC_DO;
    (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof v6);
  }
  // As root the FORCE variants pass net.core.[rw]mem_max; otherwise take what the cap allows.
  const int want = cfg.socket_buffer;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &want, sizeof want) != 0)
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  int got = 0;
  socklen_t len = sizeof got;
  if (::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got < want)
    log::warn("receive buffer is {} bytes, asked for {} (raise net.core.rmem_max)", got / 2, want);

  return sock;
}

endpoint bound_endpoint(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd < 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return endpoint::from(reinterpret_cast<const sockaddr*>(&ss));
}

}  // namespace ferry::server
