#include "server/outbox.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include "common/codec.hpp"
#include "common/log.hpp"
#include "common/udp_batch.hpp"
#include "server/request_log.hpp"

namespace ferry::server {

outbox::outbox(const unique_fd& socket, client_table& clients, shared_token_bucket& total_rate,
               std::size_t max_queue, stats& counters, watcher& w) noexcept
    : socket_{socket},
      clients_{clients},
      total_rate_{total_rate},
      stats_{counters},
      watcher_{w},
      queue_{max_queue, counters} {}

void outbox::seal_with(envelope::sealer* s, envelope::mode m) noexcept {
  sealer_ = s;
  mode_ = s != nullptr ? m : envelope::mode::plain;
  if (mode_ != envelope::mode::plain && !sealed_block_) {
    try {
      sealed_block_ = std::make_unique_for_overwrite<std::byte[]>(protocol::max_datagram);
    } catch (...) {
      ++stats_.internal_errors;  // send_block() then drops what it cannot seal
    }
  }
}

void outbox::send(const endpoint& peer, std::span<const iovec> bufs, bool charge) noexcept {
  if (!socket_) return;
  std::size_t total = 0;
  for (const auto& b : bufs) total += b.iov_len;
  if (charge) total_rate_.charge(total);
  if (queue_.send(socket_.get(), peer, bufs, total)) watcher_.queue_changed();
}

void outbox::send_reply(const endpoint& peer, std::uint64_t id, const protocol::reply& reply,
                        std::size_t limit, std::optional<envelope::mode> as) noexcept {
  std::byte out[protocol::max_small_reply + envelope::max_trailer];
  auto n = codec::encode_reply({out, protocol::max_small_reply}, id, reply);
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  const auto m = as.value_or(mode_);
  auto size = *n;
  if (m != envelope::mode::plain) {
    if (sealer_ == nullptr) {
      ++stats_.internal_errors;
      return;
    }
    size = sealer_->seal(out, size, m);
  }
  if (size > limit) {
    ++stats_.amplification_withheld;
    return;
  }
  const iovec iov = udp_batch::iov_of(out, size);
  send(peer, {&iov, 1});
}

void outbox::send_error(const endpoint& peer, std::uint64_t id, protocol::errc code,
                        std::size_t limit, std::optional<envelope::mode> as,
                        std::string_view text) noexcept {
  ++stats_.errors_sent;
  if (log::current_level() == log::level::debug) log_refusal(peer, id, code);
  ++stats_.refusals[static_cast<std::size_t>(code) % stats_.refusals.size()];
  try {
    protocol::error_reply e{code, std::string{text.empty() ? protocol::to_string(code) : text}};
    const auto trailer = envelope::trailer_size(as.value_or(mode_));
    if (limit != no_limit && codec::error_reply_size(e.message.size()) + trailer > limit)
      e.message.clear();
    send_reply(peer, id, e, limit, as);
  } catch (...) {
    ++stats_.internal_errors;
  }
}

void outbox::send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                        const read_outcome& r, const std::byte* payload) noexcept {
  std::byte prefix[protocol::data_reply_overhead];
  auto n = codec::encode_data_prefix(prefix, id, data_reply_of(offset, r), {payload, r.length});
  if (!n) {
    ++stats_.internal_errors;
    return;
  }
  if (mode_ != envelope::mode::plain) {
    // Sealing covers the whole datagram, and encryption rewrites it: one copy, in one piece.
    if (!sealed_block_ || sealer_ == nullptr) {
      ++stats_.internal_errors;
      return;
    }
    std::memcpy(sealed_block_.get(), prefix, *n);
    if (r.length > 0) std::memcpy(sealed_block_.get() + *n, payload, r.length);
    const auto size =
        sealer_->seal({sealed_block_.get(), protocol::max_datagram}, *n + r.length, mode_);
    const iovec one = udp_batch::iov_of(sealed_block_.get(), size);
    send(peer, {&one, 1}, false);
    return;
  }
  const iovec bufs[2] = {udp_batch::iov_of(prefix, *n), udp_batch::iov_of(payload, r.length)};
  send(peer, {bufs, r.length > 0 ? 2u : 1u}, false);
}

void outbox::flush_queue() noexcept {
  if (socket_) queue_.flush(socket_.get());
  watcher_.queue_changed();
}

int outbox::send_messages(std::span<mmsghdr> msgs) noexcept {
  if (!socket_) {
    errno = EBADF;
    return -1;
  }
  return ::sendmmsg(socket_.get(), msgs.data(), static_cast<unsigned>(msgs.size()), MSG_DONTWAIT);
}

void outbox::keep(const endpoint& peer, std::span<const iovec> bufs, std::size_t total) noexcept {
  if (queue_.keep(peer, bufs, total)) watcher_.queue_changed();
}

void outbox::gso_refused(const peer_key& key) noexcept {
  if (auto* c = clients_.find(key); c != nullptr) c->gso = false;
}

}  // namespace ferry::server
