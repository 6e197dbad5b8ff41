#pragma once

// UDP GSO (UDP_SEGMENT): one send of several equal-sized datagrams, which the kernel cuts
// apart as late as it can. ferryd uses it for data replies and ferry for runs of GETs.

#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

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

}  // namespace ferry::udp_gso
