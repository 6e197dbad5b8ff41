#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <span>

#include "common/address.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Datagrams that met a full socket buffer, kept (within a bound of bytes) and sent as soon as
// it drains. While any wait here, the server serves no GET: reading blocks that cannot be sent
// would only grow this queue. Loop thread only.
class send_queue {
 public:
  send_queue(std::size_t max_bytes, stats& counters) noexcept
      : max_bytes_{max_bytes}, stats_{counters} {}

  // Sends one datagram of `total` bytes on `fd` now, unless others wait before it or the socket
  // buffer is full; then keeps it. Returns true if it was kept.
  bool send(int fd, const endpoint& peer, std::span<const iovec> bufs, std::size_t total) noexcept;
  // Keeps a copy of a datagram, or drops it if that would pass the bound. Returns true if kept.
  bool keep(const endpoint& peer, std::span<const iovec> bufs, std::size_t total) noexcept;
  // Sends what waits, in order, until the socket buffer is full again.
  void flush(int fd) noexcept;

  [[nodiscard]] bool empty() const noexcept { return queue_.empty(); }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  void clear() noexcept {
    queue_.clear();
    bytes_ = 0;
  }

 private:
  struct datagram {
    endpoint peer;
    std::unique_ptr<std::byte[]> bytes;
    std::size_t size = 0;
  };
  std::size_t max_bytes_;
  stats& stats_;  // unowned
  std::deque<datagram> queue_;
  std::size_t bytes_ = 0;  // in queue_
};

}  // namespace ferry::server
