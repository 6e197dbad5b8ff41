#include "server/send_queue.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/udp_batch.hpp"
#include "server/file_ops.hpp"

namespace ferry::server {

bool send_queue::send(int fd, const endpoint& peer, std::span<const iovec> bufs,
                      std::size_t total) noexcept {
  if (queue_.empty()) {
    msghdr m{};
    m.msg_name = const_cast<sockaddr*>(peer.addr());
    m.msg_namelen = peer.length;
    m.msg_iov = const_cast<iovec*>(bufs.data());
    m.msg_iovlen = bufs.size();
    if (::sendmsg(fd, &m, MSG_DONTWAIT) >= 0) {
      ++stats_.datagrams_out;
      stats_.bytes_out += total;
      return false;
    }
    if (!udp_batch::buffer_full(errno)) {
      ++stats_.send_errors;
      return false;
    }
  }
  return keep(peer, bufs, total);
}

bool send_queue::keep(const endpoint& peer, std::span<const iovec> bufs,
                      std::size_t total) noexcept {
  // Beyond the bound it is dropped: the client asks again.
  if (bytes_ + total > max_bytes_) {
    ++stats_.send_dropped;
    return false;
  }
  try {
    datagram d{peer, std::make_unique_for_overwrite<std::byte[]>(total), total};
    struct copy {
      std::byte* to;
      std::span<const iovec> from;
    } job{d.bytes.get(), bufs};
    // A payload may lie in a file mapping, and the file may have shrunk since it was hashed.
    const bool copied = read_mapped(
        [](void* p) {
          auto& x = *static_cast<copy*>(p);
          for (const auto& b : x.from) {
            std::memcpy(x.to, b.iov_base, b.iov_len);
            x.to += b.iov_len;
          }
        },
        &job);
    if (!copied) {
      ++stats_.send_dropped;
      return false;
    }
    queue_.push_back(std::move(d));
    bytes_ += total;
    return true;
  } catch (...) {
    ++stats_.send_dropped;
    return false;
  }
}

void send_queue::flush(int fd) noexcept {
  while (!queue_.empty()) {
    auto& d = queue_.front();
    if (::sendto(fd, d.bytes.get(), d.size, MSG_DONTWAIT, d.peer.addr(), d.peer.length) < 0) {
      if (udp_batch::buffer_full(errno)) break;
      ++stats_.send_errors;
    } else {
      ++stats_.datagrams_out;
      stats_.bytes_out += d.size;
    }
    bytes_ -= d.size;
    queue_.pop_front();
  }
}

}  // namespace ferry::server
