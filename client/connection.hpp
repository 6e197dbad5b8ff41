#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/address.hpp"
#include "common/codec.hpp"
#include "common/envelope.hpp"
#include "common/udp_batch.hpp"
#include "common/unique_fd.hpp"
#include "common/uv_owned.hpp"

namespace ferry::client {

using clock = std::chrono::steady_clock;
using millis = std::chrono::milliseconds;

// Round-trip time estimate and retransmission timeout as in RFC 6298, with a lower bound
// suited to loopback and LAN paths (every request is idempotent, so an early retry is cheap).
class rtt_estimator {
 public:
  void sample(clock::duration rtt) noexcept;
  void backoff() noexcept;  // a timeout: double the RTO, up to the maximum
  [[nodiscard]] clock::duration rto() const noexcept;
  [[nodiscard]] clock::duration srtt() const noexcept { return srtt_; }
  [[nodiscard]] bool has_sample() const noexcept { return has_sample_; }
  [[nodiscard]] clock::duration latest() const noexcept { return latest_; }

  static constexpr clock::duration initial_rto = std::chrono::milliseconds{500};
  static constexpr clock::duration min_rto = std::chrono::milliseconds{20};
  static constexpr clock::duration max_rto = std::chrono::seconds{4};

 private:
  bool has_sample_ = false;
  clock::duration srtt_{0}, rttvar_{0}, latest_{0};
  int backoff_ = 0;
};

// One UDP socket connected to one server. Replies are decoded (with the same care as the server
// decodes requests) and handed to the current handler.
class connection {
 public:
  // Resolves nothing: `server` is already an address. The socket lives on `shared`, which must
  // outlive this object and be run after it is destroyed, or else on a loop of its own.
  // Throws failure on socket errors.
  explicit connection(const endpoint& server, uv_loop_t* shared = nullptr);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  using reply_handler = std::function<void(const codec::decoded_reply&)>;

  // Sends one request, with the server's address token once it has given one; returns its
  // request id (fresh for every transmission).
  std::uint64_t send(const protocol::request& req);
  // As send(), but the request joins a batch that goes out with one sendmmsg: when the batch is
  // full, after each batch of replies has been handled, or at flush().
  std::uint64_t queue(const protocol::request& req);
  void flush() noexcept;
  [[nodiscard]] std::uint64_t next_id() noexcept { return next_id_++; }
  // Every id below this one has been handed out; replies with higher ids answer nothing sent.
  [[nodiscard]] std::uint64_t issued() const noexcept { return next_id_; }

  void set_handler(reply_handler h) { handler_ = std::move(h); }
  // Called after each batch of replies has gone to the handler, before the buffer they point
  // into is read into again: whatever keeps spans of them must be done with them then.
  void set_batch_end(std::function<void()> f) { batch_end_ = std::move(f); }
  // Called with the errno when the kernel reports, from the poll, that the server's host
  // refused a datagram (ICMP port, host or network unreachable, or prohibited).
  void set_unreachable(std::function<void(int)> f) { unreachable_ = std::move(f); }
  // The same report when a send, not the poll, took the error: read after sending, outside
  // any handler, as 0 when there was none.
  [[nodiscard]] int take_refusal() noexcept;
  [[nodiscard]] static bool is_refusal(int err) noexcept;
  // Whether any reply from the server has decoded on this connection: the server was there.
  [[nodiscard]] bool heard() const noexcept { return heard_; }
  [[nodiscard]] uv_loop_t* loop() noexcept { return loop_; }
  [[nodiscard]] const endpoint& server() const noexcept { return server_; }
  [[nodiscard]] rtt_estimator& rtt() noexcept { return rtt_; }
  [[nodiscard]] std::uint64_t first_id() const noexcept { return first_id_; }
  [[nodiscard]] std::uint64_t malformed() const noexcept { return malformed_; }
  // Replies dropped for want of this process's key: unsealed, or sealed with another key.
  [[nodiscard]] std::uint64_t unauthenticated() const noexcept { return unauthenticated_; }
  // Token replies received: one at the start, and one more after each server restart.
  [[nodiscard]] std::uint64_t token_replies() const noexcept { return token_replies_; }
  // Fresh tokens the server handed out unasked, before the one in use expired.
  [[nodiscard]] std::uint64_t token_refreshes() const noexcept { return token_refreshes_; }
  [[nodiscard]] int path_mtu() const noexcept;                // the kernel's view, 0 if unknown
  [[nodiscard]] std::size_t receive_buffer() const noexcept;  // bytes the kernel grants

 private:
  // Reads what the socket holds in batches (recvmmsg), each datagram possibly several the
  // kernel coalesced (UDP GRO), and hands every one to deliver().
  void on_readable() noexcept;
  // Polls the socket for reading, and again after an error; returns libuv's result.
  int start_polling() noexcept;
  void deliver(std::span<std::byte> datagram) noexcept;
  // An error the socket reported: an ICMP refusal goes to unreachable_, the rest is loss.
  void on_socket_error(int err) noexcept;

  uv_loop_t own_loop_{};
  uv_loop_t* loop_;
  endpoint server_;
  // The connected socket, owned as the server owns its own: a descriptor polled by poll_.
  unique_fd socket_;
  std::unique_ptr<uv_owned<uv_poll_t>> poll_;
  udp_batch::receiver receiver_;
  // Requests queued for one sendmmsg, packed back to back.
  std::unique_ptr<std::byte[]> send_buf_;
  std::vector<udp_batch::datagram> sends_;
  std::size_t send_used_ = 0;
  udp_batch::messages msgs_;
  bool gso_ = true;  // false once the kernel refused UDP GSO
  reply_handler handler_;
  std::function<void()> batch_end_;
  std::function<void(int)> unreachable_;
  int refusal_ = 0;     // a refusal a send took, for take_refusal()
  bool heard_ = false;  // a reply has decoded
  rtt_estimator rtt_;
  std::uint64_t first_id_ = 0;
  std::uint64_t next_id_ = 0;
  std::uint64_t malformed_ = 0;
  std::uint64_t unauthenticated_ = 0;
  // The process's key (client/keying.hpp), if it has one.
  std::optional<envelope::sealer> sealer_;
  envelope::mode seal_mode_ = envelope::mode::plain;
  std::uint64_t token_replies_ = 0;
  std::uint64_t token_refreshes_ = 0;
  // The server's proof that we receive at our address; every request echoes it.
  std::optional<protocol::address_token> token_;
};

// Connections to several servers on one loop that this object owns, so that one fetcher can
// drive them all. Throws failure on socket errors.
class connection_group {
 public:
  explicit connection_group(const std::vector<endpoint>& servers);
  ~connection_group();
  connection_group(const connection_group&) = delete;
  connection_group& operator=(const connection_group&) = delete;

  [[nodiscard]] std::vector<connection*> members() const;
  [[nodiscard]] uv_loop_t* loop() noexcept { return &loop_; }

 private:
  uv_loop_t loop_{};
  std::vector<std::unique_ptr<connection>> conns_;
};

}  // namespace ferry::client
