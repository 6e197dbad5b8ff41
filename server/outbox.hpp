#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "common/address.hpp"
#include "common/envelope.hpp"
#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "server/client_table.hpp"
#include "server/file_ops.hpp"
#include "server/rate_limit.hpp"
#include "server/reply_batch.hpp"
#include "server/send_queue.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Where every datagram leaves the server: small replies and errors encoded on the spot, blocks
// read by the pool, and the reply batch's runs (as its reply_sink). What the socket buffer does
// not take waits in the send queue, which this owns. Loop thread only.
class outbox final : public reply_sink {
 public:
  static constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

  // Told when datagrams start or stop waiting, so that the loop polls for writability.
  class watcher {
   public:
    virtual void queue_changed() noexcept = 0;

   protected:
    ~watcher() = default;
  };

  // `socket` is the server's, and may be closed (reset) while this lives: nothing is then sent.
  outbox(const unique_fd& socket, client_table& clients, shared_token_bucket& total_rate,
         std::size_t max_queue, stats& counters, watcher& w) noexcept;

  // Seals every datagram from now on in mode `m` with `s` (ferryd --key-file), which must
  // outlive this, unless a call names another mode.
  void seal_with(envelope::sealer* s, envelope::mode m) noexcept;
  [[nodiscard]] envelope::mode seal_mode() const noexcept { return mode_; }

  // `charge`: count the bytes against --max-rate (false when they were charged in advance).
  void send(const endpoint& peer, std::span<const iovec> bufs, bool charge = true) noexcept;
  // Sends `reply` if it is at most `limit` bytes sealed in mode `as` (the server's, if unset);
  // otherwise withholds it.
  void send_reply(const endpoint& peer, std::uint64_t id, const protocol::reply& reply,
                  std::size_t limit = no_limit,
                  std::optional<envelope::mode> as = std::nullopt) noexcept;
  // To an unvalidated source (a `limit`) the code goes without its text if the text would not
  // fit. The text is the code's own unless `text` is given.
  void send_error(const endpoint& peer, std::uint64_t id, protocol::errc code,
                  std::size_t limit = no_limit, std::optional<envelope::mode> as = std::nullopt,
                  std::string_view text = {}) noexcept;
  // A block read off the loop, whose bytes were charged to the rate limits when it was admitted.
  void send_block(const endpoint& peer, std::uint64_t id, std::uint64_t offset,
                  const read_outcome& r, const std::byte* payload) noexcept;

  // Sends what waits, in order, until the socket buffer is full again.
  void flush_queue() noexcept;
  [[nodiscard]] bool queue_empty() const noexcept { return queue_.empty(); }
  [[nodiscard]] std::size_t queued_bytes() const noexcept { return queue_.bytes(); }
  void clear() noexcept { queue_.clear(); }

  // reply_sink
  int send_messages(std::span<mmsghdr> msgs) noexcept override;
  void keep(const endpoint& peer, std::span<const iovec> bufs, std::size_t total) noexcept override;
  void gso_refused(const peer_key& key) noexcept override;

 private:
  const unique_fd& socket_;          // unowned
  client_table& clients_;            // unowned
  shared_token_bucket& total_rate_;  // unowned
  stats& stats_;                     // unowned
  watcher& watcher_;                 // unowned
  send_queue queue_;
  envelope::sealer* sealer_ = nullptr;  // unowned
  envelope::mode mode_ = envelope::mode::plain;
  // A block read by the pool, copied behind its prefix to be sealed in one piece.
  std::unique_ptr<std::byte[]> sealed_block_;
};

}  // namespace ferry::server
