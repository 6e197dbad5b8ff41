#pragma once

// A UDP relay between one client and one server, on its own thread, that can cut the server's
// replies off after a given number of data replies. Tests use it to stop a transfer at an exact
// point (a fixed number of blocks delivered) instead of relying on timing.

#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "common/address.hpp"

namespace ferry::test {

class udp_relay {
 public:
  // Listens on 127.0.0.1:0 and forwards every datagram to `server`; replies go back to the
  // address the last request came from.
  explicit udp_relay(const ::ferry::endpoint& server);
  ~udp_relay();
  udp_relay(const udp_relay&) = delete;
  udp_relay& operator=(const udp_relay&) = delete;

  // Where clients send their requests.
  [[nodiscard]] const ::ferry::endpoint& endpoint() const noexcept { return front_endpoint_; }
  // Where the server sees the requests come from: the client, as far as it can tell.
  [[nodiscard]] ::ferry::endpoint source() const;

  // After `n` data replies in total have been forwarded, drop everything the server sends
  // (requests still reach the server). Thread-safe.
  void cut_after_data_replies(std::uint64_t n) noexcept;
  // Forwards replies again and forgets the limit. Thread-safe.
  void restore() noexcept;
  // Flips a byte in the middle of every `n`th data reply from now on (0: none), as an on-path
  // forger would. Thread-safe.
  void tamper_every(std::uint64_t n) noexcept { tamper_every_ = n; }
  [[nodiscard]] std::uint64_t tampered() const noexcept { return tampered_; }

  // Every request forwarded from now on is also kept, in order, so a test can replay what a
  // real client sent. Thread-safe.
  void record_requests() noexcept { recording_ = true; }
  [[nodiscard]] std::vector<std::vector<std::byte>> recorded() const;

  [[nodiscard]] std::uint64_t data_replies_forwarded() const noexcept { return data_forwarded_; }
  [[nodiscard]] std::uint64_t replies_dropped() const noexcept { return dropped_; }
  [[nodiscard]] bool is_cut() const noexcept { return cut_; }

 private:
  void run() noexcept;

  int front_ = -1;  // bound to 127.0.0.1:0, faces the client
  int back_ = -1;   // connected to the server
  int wake_ = -1;   // eventfd that ends run()
  ::ferry::endpoint front_endpoint_;
  std::atomic<bool> cut_{false};
  std::atomic<std::uint64_t> limit_{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<std::uint64_t> data_forwarded_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<bool> recording_{false};
  std::atomic<std::uint64_t> tamper_every_{0};
  std::atomic<std::uint64_t> tampered_{0};
  mutable std::mutex recorded_mutex_;
  std::vector<std::vector<std::byte>> recorded_;
  std::thread thread_;
};

}  // namespace ferry::test
