#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>

namespace ferry::server {

// A token bucket in bytes that may go into debt: a datagram is sent whole once the bucket is
// not empty, and the debt delays the next one. Rate 0 means no limit.
class token_bucket {
 public:
  token_bucket() = default;
  token_bucket(std::uint64_t rate, std::uint64_t now_ms) noexcept
      : rate_{rate}, tokens_{static_cast<double>(burst())}, updated_ms_{now_ms} {}

  [[nodiscard]] bool limited() const noexcept { return rate_ != 0; }
  // True if a datagram may be sent now.
  [[nodiscard]] bool ready(std::uint64_t now_ms) noexcept {
    refill(now_ms);
    return rate_ == 0 || tokens_ > 0;
  }
  void charge(std::uint64_t bytes) noexcept {
    if (rate_ != 0) tokens_ -= static_cast<double>(bytes);
  }
  // Milliseconds until ready(), at least 1.
  [[nodiscard]] std::uint64_t wait_ms() const noexcept {
    if (rate_ == 0 || tokens_ > 0) return 0;
    return std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(-tokens_ * 1000.0 / static_cast<double>(rate_)) + 1);
  }

 private:
  // Ten milliseconds of sending, but at least a few of the largest blocks, so that a low rate
  // still sends whole blocks and a high one is not held to a trickle by timer resolution.
  [[nodiscard]] std::uint64_t burst() const noexcept {
    return std::max<std::uint64_t>(rate_ / 100, 4 * 65536);
  }
  void refill(std::uint64_t now_ms) noexcept {
    if (rate_ == 0 || now_ms <= updated_ms_) return;
    tokens_ = std::min(
        static_cast<double>(burst()),
        tokens_ + static_cast<double>(rate_) * static_cast<double>(now_ms - updated_ms_) / 1000.0);
    updated_ms_ = now_ms;
  }

  std::uint64_t rate_ = 0;
  double tokens_ = 0;
  std::uint64_t updated_ms_ = 0;
};

// A token_bucket that the loop threads of one process share (ferryd --workers), so that a limit
// holds for the process. Every call takes a lock, except without a limit, when there is nothing
// to share. Callers' clocks may lag each other by a few milliseconds; a time earlier than the
// last refill adds nothing.
class shared_token_bucket {
 public:
  shared_token_bucket(std::uint64_t rate, std::uint64_t now_ms) noexcept
      : bucket_{rate, now_ms}, limited_{rate != 0} {}

  [[nodiscard]] bool limited() const noexcept { return limited_; }
  [[nodiscard]] bool ready(std::uint64_t now_ms) noexcept {
    if (!limited_) return true;
    std::lock_guard lock{mutex_};
    return bucket_.ready(now_ms);
  }
  void charge(std::uint64_t bytes) noexcept {
    if (!limited_) return;
    std::lock_guard lock{mutex_};
    bucket_.charge(bytes);
  }
  [[nodiscard]] std::uint64_t wait_ms() const noexcept {
    if (!limited_) return 0;
    std::lock_guard lock{mutex_};
    return bucket_.wait_ms();
  }

 private:
  mutable std::mutex mutex_;
  token_bucket bucket_;
  const bool limited_;
};

}  // namespace ferry::server
