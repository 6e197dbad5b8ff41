#include "common/udp_batch.hpp"

#include <cstring>

namespace ferry::udp_batch {

receiver::receiver(unsigned slots, std::size_t slot_size)
    : slots_{slots},
      slot_size_{slot_size},
      buf_{std::make_unique_for_overwrite<std::byte[]>(slots * slot_size)},
      msgs_{std::make_unique<mmsghdr[]>(slots)},
      iov_{std::make_unique<iovec[]>(slots)},
      from_{std::make_unique<sockaddr_storage[]>(slots)},
      ctrl_{std::make_unique<udp_gso::gro_control[]>(slots)} {}

int receiver::receive(int fd) noexcept {
  for (unsigned i = 0; i < slots_; ++i) {
    iov_[i] = iovec{buf_.get() + i * slot_size_, slot_size_};
    auto& h = msgs_[i];
    h = mmsghdr{};
    h.msg_hdr.msg_iov = &iov_[i];
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_name = &from_[i];
    h.msg_hdr.msg_namelen = sizeof from_[i];
    h.msg_hdr.msg_control = ctrl_[i].bytes;
    h.msg_hdr.msg_controllen = sizeof ctrl_[i].bytes;
  }
  return ::recvmmsg(fd, msgs_.get(), slots_, MSG_DONTWAIT, nullptr);
}

namespace {
bool same_destination(const datagram& a, const datagram& b) noexcept {
  return a.to == b.to || (a.to != nullptr && b.to != nullptr && a.to_length == b.to_length &&
                          std::memcmp(a.to, b.to, a.to_length) == 0);
}
}  // namespace

std::size_t messages::build(std::span<const datagram> d) noexcept {
  count_ = 0;
  std::size_t parts = 0;  // of parts_ used
  std::size_t i = 0;
  while (i < d.size() && count_ < max_messages && parts + d[i].part_count <= max_parts) {
    // Every segment but the last must be exactly the first one's size.
    std::size_t j = i + 1, bytes = d[i].size, run_parts = d[i].part_count;
    while (d[i].gso && j < d.size() && d[j].gso && same_destination(d[j], d[i]) &&
           d[j - 1].size == d[i].size && d[j].size <= d[i].size && j - i < udp_gso::max_segments &&
           bytes + d[j].size <= udp_gso::max_bytes &&
           parts + run_parts + d[j].part_count <= max_parts) {
      bytes += d[j].size;
      run_parts += d[j].part_count;
      ++j;
    }
    auto& h = msgs_[count_];
    h = mmsghdr{};
    h.msg_hdr.msg_name = const_cast<sockaddr*>(d[i].to);
    h.msg_hdr.msg_namelen = d[i].to != nullptr ? d[i].to_length : 0;
    h.msg_hdr.msg_iov = &parts_[parts];
    // Parts that follow each other in memory (requests packed back to back) become one iovec:
    // beyond 8 of them the kernel allocates an array for every send.
    const auto first_part = parts;
    for (std::size_t k = i; k < j; ++k) {
      for (std::uint8_t p = 0; p < d[k].part_count; ++p) {
        const auto& part = d[k].parts[p];
        auto* prev = parts > first_part ? &parts_[parts - 1] : nullptr;
        if (prev != nullptr &&
            static_cast<std::byte*>(prev->iov_base) + prev->iov_len == part.iov_base)
          prev->iov_len += part.iov_len;
        else
          parts_[parts++] = part;
      }
    }
    h.msg_hdr.msg_iovlen = parts - first_part;
    if (j - i > 1)
      udp_gso::set_segment(h.msg_hdr, ctrl_[count_], static_cast<std::uint16_t>(d[i].size));
    first_[count_] = i;
    first_[++count_] = j;
    i = j;
  }
  return i;
}

}  // namespace ferry::udp_batch
