#include "server/reply_batch.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/codec.hpp"
#include "common/log.hpp"
#include "common/udp_gso.hpp"

namespace ferry::server {

namespace {
iovec make_iov(const void* p, std::size_t n) { return iovec{const_cast<void*>(p), n}; }

protocol::data_reply meta_of(std::uint64_t offset, const read_outcome& r) noexcept {
  protocol::data_reply meta;
  meta.offset = offset;
  meta.eof = r.eof;
  meta.version = r.version;
  meta.length = r.length;
  return meta;
}
}  // namespace

reply_batch::reply_batch(reply_sink& sink, shared_token_bucket& total_rate, stats& counters)
    : sink_{sink},
      total_rate_{total_rate},
      stats_{counters},
      buf_{std::make_unique_for_overwrite<std::byte[]>(capacity)} {
  out_.reserve(max_replies);
}

std::byte* reply_batch::payload_slot(std::uint32_t block) noexcept {
  if (out_.size() >= max_replies || used_ + protocol::data_reply_overhead + block > capacity)
    flush();
  return buf_.get() + used_ + protocol::data_reply_overhead;
}

std::size_t reply_batch::payload_slots(std::uint32_t block, std::span<std::byte*> slots) noexcept {
  const auto stride = protocol::data_reply_overhead + block;
  if (out_.size() + slots.size() > max_replies || used_ + slots.size() * stride > capacity) flush();
  const auto n = std::min({slots.size(), max_replies - out_.size(), (capacity - used_) / stride});
  // Every block but a last one is whole, so the replies lie back to back, as add() appends them.
  for (std::size_t i = 0; i < n; ++i)
    slots[i] = buf_.get() + used_ + i * stride + protocol::data_reply_overhead;
  return n;
}

bool reply_batch::push(outgoing o) noexcept {
  total_rate_.charge(o.size);
  try {
    out_.push_back(std::move(o));
  } catch (...) {
    ++stats_.send_dropped;
    return false;
  }
  return true;
}

void reply_batch::add(const client_state& c, std::uint64_t id, std::uint64_t offset,
                      const read_outcome& r) noexcept {
  std::byte* at = buf_.get() + used_;
  const std::span<const std::byte> payload{at + protocol::data_reply_overhead, r.length};
  auto n = codec::encode_data_prefix({at, protocol::data_reply_overhead}, id, meta_of(offset, r),
                                     payload);
  // The payload was read right behind a prefix of exactly this size.
  if (!n || *n != protocol::data_reply_overhead) {
    ++stats_.internal_errors;
    return;
  }
  const auto size = protocol::data_reply_overhead + r.length;
  if (push(outgoing{c.key, c.peer, used_, size, size, nullptr, nullptr, gso_ok_ && c.gso}))
    used_ += size;
}

bool reply_batch::add_mapped(const client_state& c, std::uint64_t id, std::uint64_t offset,
                             const read_outcome& r,
                             const std::shared_ptr<const file_mapping>& map) noexcept {
  if (out_.size() >= max_replies || used_ + protocol::data_reply_overhead > capacity) flush();
  struct encoding {
    std::byte* at;
    std::uint64_t id;
    protocol::data_reply meta;
    std::span<const std::byte> payload;
    bool ok;
  } e{buf_.get() + used_, id, meta_of(offset, r), {map->at(offset), r.length}, false};
  // The checksum reads the whole payload, and the file may have shrunk since its fstat.
  const bool read = read_mapped(
      [](void* p) {
        auto& x = *static_cast<encoding*>(p);
        auto n = codec::encode_data_prefix({x.at, protocol::data_reply_overhead}, x.id, x.meta,
                                           x.payload);
        x.ok = n && *n == protocol::data_reply_overhead;
      },
      &e);
  if (!read) return false;
  if (!e.ok) {
    ++stats_.internal_errors;
    return true;
  }
  const auto size = protocol::data_reply_overhead + r.length;
  if (push(outgoing{c.key, c.peer, used_, protocol::data_reply_overhead, size, e.payload.data(),
                    map, gso_ok_ && c.gso}))
    used_ += protocol::data_reply_overhead;
  return true;
}

std::size_t reply_batch::reply_iov(const outgoing& o, iovec* out) const noexcept {
  out[0] = make_iov(buf_.get() + o.at, o.head);
  if (o.payload == nullptr) return 1;
  out[1] = make_iov(o.payload, o.size - o.head);
  return 2;
}

void reply_batch::clear() noexcept {
  out_.clear();
  used_ = 0;
}

void reply_batch::flush() noexcept {
  // Group each client's replies, keeping their order: equal-sized replies to one client can
  // then go out as one UDP GSO send.
  std::stable_sort(out_.begin(), out_.end(), [](const outgoing& a, const outgoing& b) {
    return a.key.bytes < b.key.bytes;
  });
  mmsghdr msgs[max_replies];
  iovec iov[2 * max_replies];  // each reply's bytes in buf_, and its payload if kept apart
  udp_gso::control ctrl[max_replies];
  // first[k] and count[k]: the replies message k carries.
  std::size_t first[max_replies], count[max_replies];
  std::size_t next = 0;  // the first reply not yet sent or given up
  while (next < out_.size()) {
    unsigned m = 0;
    std::size_t v = 0;  // iovecs used
    for (std::size_t i = next; i < out_.size(); ++m) {
      std::size_t j = i + 1, bytes = out_[i].size;
      // Every segment but the last must be exactly the first one's size.
      while (out_[i].gso && j < out_.size() && out_[j].key == out_[i].key &&
             out_[j - 1].size == out_[i].size && out_[j].size <= out_[i].size &&
             j - i < udp_gso::max_segments && bytes + out_[j].size <= udp_gso::max_bytes) {
        bytes += out_[j].size;
        ++j;
      }
      const auto first_iov = v;
      for (std::size_t k = i; k < j; ++k) v += reply_iov(out_[k], &iov[v]);
      msgs[m] = mmsghdr{};
      auto& h = msgs[m].msg_hdr;
      h.msg_name = const_cast<sockaddr*>(out_[i].peer.addr());
      h.msg_namelen = out_[i].peer.length;
      h.msg_iov = &iov[first_iov];
      h.msg_iovlen = v - first_iov;
      if (j - i > 1) udp_gso::set_segment(h, ctrl[m], static_cast<std::uint16_t>(out_[i].size));
      first[m] = i;
      count[m] = j - i;
      i = j;
    }
    const int sent = sink_.send_messages({msgs, m});
    const int err = errno;
    for (int k = 0; k < std::max(sent, 0); ++k) {
      if (count[k] > 1) ++stats_.gso_sends;
      stats_.datagrams_out += count[k];
      for (std::size_t r = first[k]; r < first[k] + count[k]; ++r) stats_.bytes_out += out_[r].size;
    }
    if (sent > 0) {
      next = first[sent - 1] + count[sent - 1];
      continue;
    }
    if (sent == 0) break;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) break;
    if (count[0] > 1 && (err == EIO || err == EINVAL || err == EMSGSIZE)) {
      // EIO: the device cannot checksum segments, so no GSO at all. EINVAL or EMSGSIZE: not
      // this segment size on this client's path (a segment would be IP-fragmented), so none for
      // this client. Either way these replies go again, one datagram each.
      const auto key = out_[first[0]].key;
      ++stats_.gso_refused;
      if (err == EIO) gso_ok_ = false;
      sink_.gso_refused(key);
      for (auto& o : out_)
        if (err == EIO || o.key == key) o.gso = false;
      log::debug("UDP GSO refused ({}); sending datagrams one by one", std::strerror(err));
      continue;
    }
    ++stats_.send_errors;  // this message is lost; the client asks again
    next = first[0] + count[0];
  }
  for (; next < out_.size(); ++next) {
    iovec parts[2];
    const auto n = reply_iov(out_[next], parts);
    sink_.keep(out_[next].peer, {parts, n}, out_[next].size);
  }
  clear();
}

}  // namespace ferry::server
