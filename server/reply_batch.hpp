#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/address.hpp"
#include "common/envelope.hpp"
#include "common/udp_batch.hpp"
#include "server/client_table.hpp"
#include "server/file_ops.hpp"
#include "server/rate_limit.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Where a reply_batch sends: the server's socket, or a test's recorder.
class reply_sink {
 public:
  // Sends the messages as sendmmsg(2) would: returns how many went, or -1 with errno set.
  virtual int send_messages(std::span<mmsghdr> msgs) noexcept = 0;
  // Keeps a reply that could not go now (the socket buffer is full), or drops it.
  virtual void keep(const endpoint& peer, std::span<const iovec> bufs,
                    std::size_t total) noexcept = 0;
  // The kernel refused UDP GSO towards this client; its next replies go one by one.
  virtual void gso_refused(const peer_key& key) noexcept = 0;

 protected:
  ~reply_sink() = default;
};

// DATA replies gathered during a turn and sent together: one sendmmsg, and one UDP GSO send
// for each client's run of equal-sized replies, so a run crosses the network stack once instead
// of once per block. It owns the buffer the replies are built in; a payload is read straight
// into it, behind the room for its prefix, or stays in a file mapping until it is sent.
class reply_batch {
 public:
  // Bytes and replies gathered at most before they are sent.
  static constexpr std::size_t capacity = 512u << 10;
  static constexpr std::size_t max_replies = 64;

  reply_batch(reply_sink& sink, shared_token_bucket& total_rate, stats& counters);

  // Seals every reply in mode `m` with `s` (ferryd --key-file), which must outlive this. A
  // sealed reply is built in one piece, its trailer behind its payload: add_mapped() is then
  // not to be used.
  void seal_with(envelope::sealer* s, envelope::mode m) noexcept;
  [[nodiscard]] bool sealed() const noexcept { return trailer_ != 0; }

  // Where the payload of a reply of up to `block` bytes goes; sends what waits first if it
  // would not fit.
  [[nodiscard]] std::byte* payload_slot(std::uint32_t block) noexcept;
  // Room for up to `slots.size()` replies of `block` bytes, back to back: fills `slots` with
  // where their payloads go and returns how many fit. Their add() calls must follow in order.
  [[nodiscard]] std::size_t payload_slots(std::uint32_t block,
                                          std::span<std::byte*> slots) noexcept;
  // Where the next add() expects its payload.
  [[nodiscard]] const std::byte* next_payload() const noexcept {
    return buf_.get() + used_ + protocol::data_reply_overhead;
  }
  // Completes the reply to `c` whose payload was read as `r` at next_payload().
  void add(const client_state& c, std::uint64_t id, std::uint64_t offset,
           const read_outcome& r) noexcept;
  // Adds a reply whose payload stays in `map`; false if the file shrank under the read.
  bool add_mapped(const client_state& c, std::uint64_t id, std::uint64_t offset,
                  const read_outcome& r, const std::shared_ptr<const file_mapping>& map) noexcept;
  // Sends every reply gathered; what the socket does not take goes to the sink's keep().
  void flush() noexcept;
  [[nodiscard]] bool empty() const noexcept { return out_.empty(); }
  void clear() noexcept;

 private:
  struct outgoing {
    peer_key key;
    endpoint peer;
    std::size_t at = 0;    // offset in buf_
    std::size_t head = 0;  // bytes there: the whole reply, or its prefix if `payload` is set
    std::size_t size = 0;  // of the whole reply
    const std::byte* payload = nullptr;  // in `keep`, sent from there without a copy
    std::shared_ptr<const file_mapping> keep;
    bool gso = true;  // may go out in one UDP GSO send with its neighbours
  };
  // The iovecs of one reply (one or two) into `out`; returns how many.
  std::size_t reply_iov(const outgoing& o, iovec* out) const noexcept;
  bool push(outgoing o) noexcept;

  reply_sink& sink_;                 // unowned
  shared_token_bucket& total_rate_;  // unowned
  stats& stats_;                     // unowned
  std::unique_ptr<std::byte[]> buf_;
  std::size_t used_ = 0;
  std::vector<outgoing> out_;
  udp_batch::messages msgs_;
  bool gso_ok_ = true;  // cleared when the kernel or the device cannot do UDP GSO at all
  envelope::sealer* sealer_ = nullptr;  // unowned
  envelope::mode mode_ = envelope::mode::plain;
  std::size_t trailer_ = 0;  // bytes the seal adds behind each reply
};

}  // namespace ferry::server
