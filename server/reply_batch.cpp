#include "server/reply_batch.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/codec.hpp"
#include "common/log.hpp"

namespace ferry::server {

reply_batch::reply_batch(reply_sink& sink, shared_token_bucket& total_rate, stats& counters)
    : sink_{sink},
      total_rate_{total_rate},
      stats_{counters},
      buf_{std::make_unique_for_overwrite<std::byte[]>(capacity)} {
  out_.reserve(max_replies);
}

void reply_batch::seal_with(envelope::sealer* s, envelope::mode m) noexcept {
  sealer_ = s;
  mode_ = s != nullptr ? m : envelope::mode::plain;
  trailer_ = envelope::trailer_size(mode_);
}

std::byte* reply_batch::payload_slot(std::uint32_t block) noexcept {
  if (out_.size() >= max_replies ||
      used_ + protocol::data_reply_overhead + block + trailer_ > capacity)
    flush();
  return buf_.get() + used_ + protocol::data_reply_overhead;
}

std::size_t reply_batch::payload_slots(std::uint32_t block, std::span<std::byte*> slots) noexcept {
  const auto stride = protocol::data_reply_overhead + block + trailer_;
  if (out_.size() + slots.size() > max_replies || used_ + slots.size() * stride > capacity) flush();
  const auto n = std::min({slots.size(), max_replies - out_.size(), (capacity - used_) / stride});
  // Every block but a last one is whole, so the replies lie back to back, as add() appends them
  // (each with its seal's trailer, if any).
  for (std::size_t i = 0; i < n; ++i)
    slots[i] = buf_.get() + used_ + i * stride + protocol::data_reply_overhead;
  return n;
}

bool reply_batch::push(outgoing o) noexcept {
  // payload_slot() and add_mapped() make room first; a caller that did not loses the reply.
  if (out_.size() >= max_replies) {
    ++stats_.internal_errors;
    return false;
  }
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
  auto n = codec::encode_data_prefix({at, protocol::data_reply_overhead}, id,
                                     data_reply_of(offset, r), payload);
  // The payload was read right behind a prefix of exactly this size.
  if (!n || *n != protocol::data_reply_overhead) {
    ++stats_.internal_errors;
    return;
  }
  auto size = protocol::data_reply_overhead + r.length;
  if (sealer_ != nullptr) size = sealer_->seal({at, size + trailer_}, size, mode_);
  if (push(outgoing{c.key, c.peer, used_, size, size, nullptr, nullptr, gso_ok_ && c.gso}))
    used_ += size;
}

bool reply_batch::add_mapped(const client_state& c, std::uint64_t id, std::uint64_t offset,
                             const read_outcome& r,
                             const std::shared_ptr<const file_mapping>& map) noexcept {
  if (sealed()) {
    ++stats_.internal_errors;  // block_reader does not map for a sealed batch
    return false;
  }
  if (out_.size() >= max_replies || used_ + protocol::data_reply_overhead > capacity) flush();
  struct encoding {
    std::byte* at;
    std::uint64_t id;
    protocol::data_reply meta;
    std::span<const std::byte> payload;
    bool ok;
  } e{buf_.get() + used_, id, data_reply_of(offset, r), {map->at(offset), r.length}, false};
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
  out[0] = udp_batch::iov_of(buf_.get() + o.at, o.head);
  if (o.payload == nullptr) return 1;
  out[1] = udp_batch::iov_of(o.payload, o.size - o.head);
  return 2;
}

void reply_batch::clear() noexcept {
  out_.clear();
  used_ = 0;
}

void reply_batch::flush() noexcept {
  // Group each client's replies, keeping their order: equal-sized replies to one client can
  // then go out as one UDP GSO send.
  std::stable_sort(out_.begin(), out_.end(),
                   [](const outgoing& a, const outgoing& b) { return a.key.bytes < b.key.bytes; });
  udp_batch::datagram d[max_replies];
  for (std::size_t i = 0; i < out_.size(); ++i) {
    const auto& o = out_[i];
    d[i].to = o.peer.addr();
    d[i].to_length = o.peer.length;
    d[i].part_count = static_cast<std::uint8_t>(reply_iov(o, d[i].parts));
    d[i].size = o.size;
    d[i].gso = o.gso;
  }
  std::size_t next = 0;  // the first reply not yet sent or given up
  while (next < out_.size()) {
    const std::span<udp_batch::datagram> rest{d + next, out_.size() - next};
    (void)msgs_.build(rest);
    const int sent = sink_.send_messages({msgs_.data(), msgs_.size()});
    const int err = errno;
    for (unsigned k = 0; k < static_cast<unsigned>(std::max(sent, 0)); ++k) {
      if (msgs_.datagrams_of(k) > 1) ++stats_.gso_sends;
      stats_.datagrams_out += msgs_.datagrams_of(k);
    }
    if (sent > 0) {
      const auto done = msgs_.datagrams_before(static_cast<unsigned>(sent));
      for (std::size_t r = next; r < next + done; ++r) stats_.bytes_out += out_[r].size;
      next += done;
      continue;
    }
    if (sent == 0 || udp_batch::buffer_full(err)) break;
    if (err == EINTR) continue;
    if (msgs_.datagrams_of(0) > 1 && udp_batch::gso_refusal(err)) {
      // EIO or ENOPROTOOPT: no GSO at all on this device or kernel. Otherwise not this segment size
      // on this client's path, so none for this client. Either way these replies go again, one
      // datagram each.
      const auto key = out_[next].key;
      ++stats_.gso_refused;
      if (err == EIO || err == ENOPROTOOPT) gso_ok_ = false;
      sink_.gso_refused(key);
      for (std::size_t r = next; r < out_.size(); ++r)
        if (!gso_ok_ || out_[r].key == key) out_[r].gso = d[r].gso = false;
      log::debug("UDP GSO refused ({}); sending datagrams one by one", std::strerror(err));
      continue;
    }
    ++stats_.send_errors;  // this message is lost; the client asks again
    next += msgs_.datagrams_of(0);
  }
  for (; next < out_.size(); ++next)
    sink_.keep(out_[next].peer, {d[next].parts, d[next].part_count}, out_[next].size);
  clear();
}

}  // namespace ferry::server
