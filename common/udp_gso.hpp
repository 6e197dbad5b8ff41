#pragma once

// UDP GSO (UDP_SEGMENT): one send of several equal-sized datagrams, which the kernel cuts
// apart as late as it can; UDP GRO: several such datagrams received as one buffer. ferryd uses
// them for data replies and ferry for runs of GETs, each in both directions.

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace ferry::udp_gso {

// What one GSO send may carry: the kernel's UDP_MAX_SEGMENTS, and bytes that fit one IP
// datagram's length field with room for the headers.
inline constexpr std::size_t max_segments = 64;
inline constexpr std::size_t max_bytes = 65000;

// Room for the control message of one GSO send.
struct control {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(std::uint16_t))];
};

// Makes `h` a GSO send of `segment`-byte datagrams (the last may be shorter), its control
// message in `c`, which must outlive the send.
inline void set_segment(msghdr& h, control& c, std::uint16_t segment) noexcept {
  h.msg_control = c.bytes;
  h.msg_controllen = sizeof c.bytes;
  cmsghdr* cm = CMSG_FIRSTHDR(&h);
  cm->cmsg_level = SOL_UDP;
  cm->cmsg_type = UDP_SEGMENT;
  cm->cmsg_len = CMSG_LEN(sizeof segment);
  std::memcpy(CMSG_DATA(cm), &segment, sizeof segment);
}

// The size of the datagrams UDP GRO coalesced into a message received with recvmsg, from its
// control message; 0 if it holds one datagram as sent. Every one but the last has that size.
inline std::size_t gro_segment(msghdr& h) noexcept {
  std::size_t segment = 0;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&h); cm != nullptr; cm = CMSG_NXTHDR(&h, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
      int size = 0;
      std::memcpy(&size, CMSG_DATA(cm), sizeof size);
      segment = size > 0 ? static_cast<std::size_t>(size) : 0;
    }
  }
  return segment;
}

// Calls `f` with each datagram of a received message, given gro_segment() of it: every one but
// the last is exactly `segment` bytes long (0: the message is one datagram). An empty datagram
// is still one datagram, so `f` is called at least once.
template <class Byte, class F>
void for_each_datagram(std::span<Byte> all, std::size_t segment, F&& f) {
  if (segment == 0) segment = all.size();
  std::size_t at = 0;
  do {
    const auto n = std::min(segment, all.size() - at);
    f(all.subspan(at, n));
    at += n;
  } while (at < all.size());
}

// Room for the control message that carries it.
struct gro_control {
  alignas(cmsghdr) char bytes[CMSG_SPACE(sizeof(int))];
};

}  // namespace ferry::udp_gso
