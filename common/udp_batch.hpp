#pragma once

// Batched UDP for both ends: recvmmsg into slots reused for every batch, each message split
// into the datagrams UDP GRO coalesced, and sendmmsg of datagrams grouped into UDP GSO sends.
// What to do when a send fails is each end's own policy; the batching is here, once.

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/udp_gso.hpp"

namespace ferry::udp_batch {

// Receives up to `slots` messages a call, each into a slot of `slot_size` bytes.
class receiver {
 public:
  receiver(unsigned slots, std::size_t slot_size);
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  // Reads what waits on `fd`, without waiting: returns how many messages, or -1 with errno.
  [[nodiscard]] int receive(int fd) noexcept;
  [[nodiscard]] unsigned slots() const noexcept { return slots_; }
  // Of message `i` of the last receive(): longer than its slot (and so cut short)?
  [[nodiscard]] bool truncated(unsigned i) const noexcept {
    return (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
  }
  // Its bytes, and who sent it (unset for a connected socket's). The bytes are the caller's
  // to change (a sealed datagram is opened where it lies) until the next receive().
  [[nodiscard]] std::span<std::byte> bytes(unsigned i) const noexcept {
    return {buf_.get() + i * slot_size_, msgs_[i].msg_len};
  }
  [[nodiscard]] const sockaddr* from(unsigned i) const noexcept {
    return reinterpret_cast<const sockaddr*>(&from_[i]);
  }
  // Calls `f` with each datagram of message `i`: one, or those UDP GRO coalesced into it.
  template <class F>
  void for_each_datagram(unsigned i, F&& f) {
    udp_gso::for_each_datagram(bytes(i), udp_gso::gro_segment(msgs_[i].msg_hdr),
                               std::forward<F>(f));
  }

 private:
  unsigned slots_;
  std::size_t slot_size_;
  std::unique_ptr<std::byte[]> buf_;
  std::unique_ptr<mmsghdr[]> msgs_;
  std::unique_ptr<iovec[]> iov_;
  std::unique_ptr<sockaddr_storage[]> from_;
  std::unique_ptr<udp_gso::gro_control[]> ctrl_;
};

// An iovec over bytes that sending only reads (iovec has no const flavour).
[[nodiscard]] inline iovec iov_of(const void* p, std::size_t n) noexcept {
  return iovec{const_cast<void*>(p), n};
}

// One datagram to send: its bytes in one or two parts (a prefix, and a payload kept elsewhere).
struct datagram {
  const sockaddr* to = nullptr;  // null on a connected socket
  socklen_t to_length = 0;
  iovec parts[2]{};
  std::uint8_t part_count = 1;
  std::size_t size = 0;  // of both parts
  bool gso = true;       // may be sent in one UDP GSO send with its neighbours
};

// The messages of one sendmmsg, built from datagrams in order: each run of datagrams to one
// destination that allow GSO, all of one size but a shorter last one, is one GSO message.
class messages {
 public:
  static constexpr unsigned max_messages = 128;
  static constexpr std::size_t max_parts = 256;

  // Builds messages from the front of `d` (which must outlive sending them); returns how many
  // datagrams they carry.
  std::size_t build(std::span<const datagram> d) noexcept;
  // The messages built, for sendmmsg.
  [[nodiscard]] mmsghdr* data() noexcept { return msgs_; }
  [[nodiscard]] unsigned size() const noexcept { return count_; }
  // Datagrams carried by message k, and by the first k messages together.
  [[nodiscard]] std::size_t datagrams_of(unsigned k) const noexcept {
    return first_[k + 1] - first_[k];
  }
  [[nodiscard]] std::size_t datagrams_before(unsigned k) const noexcept { return first_[k]; }

 private:
  mmsghdr msgs_[max_messages];
  iovec parts_[max_parts];
  udp_gso::control ctrl_[max_messages];
  std::size_t first_[max_messages + 1] = {};
  unsigned count_ = 0;
};

// Whether a send of a GSO message failed with `err` because GSO cannot be used: EIO, the
// device cannot checksum segments; EINVAL or EMSGSIZE, a segment too large for the path (it
// would be IP-fragmented); ENOPROTOOPT, a kernel without UDP_SEGMENT.
[[nodiscard]] inline bool gso_refusal(int err) noexcept {
  return err == EIO || err == EINVAL || err == EMSGSIZE || err == ENOPROTOOPT;
}
// Whether `err` means only that the socket buffer is full for now.
[[nodiscard]] inline bool buffer_full(int err) noexcept {
  return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS;
}

}  // namespace ferry::udp_batch
