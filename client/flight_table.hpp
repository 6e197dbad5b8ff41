#pragma once

// The GETs in flight to one server. A connection hands out request ids in increasing order, so
// the table is a ring indexed from the oldest id it still holds: adding, finding and retiring a
// request take constant time and, once the ring has grown to the window, no allocation. This
// runs once per block, where a hash map's lookups and nodes showed in the client's profile.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "client/congestion.hpp"
#include "client/connection.hpp"

namespace ferry::client {

struct flight {
  std::uint64_t index = 0;  // the block asked for
  sent_state cc{};          // what congestion control noted when it was sent, its time included
  std::uint64_t seq = 0;    // this source's send order
  // Blocks of the GET-RUN this request heads, whose id the datagram carried; 1 for a GET and
  // for the other blocks of a run.
  std::uint16_t run_length = 1;
};

class flight_table {
 public:
  void clear() noexcept { head_ = count_ = live_ = 0; }
  [[nodiscard]] std::size_t size() const noexcept { return live_; }
  [[nodiscard]] bool empty() const noexcept { return live_ == 0; }

  // Adds a request; `id` must be above every id added since the last clear(). Ids in between
  // (requests of other kinds, on the same connection) are held as empty slots until retired.
  void add(std::uint64_t id, const flight& f) {
    if (count_ == 0) first_ = id;
    const auto n = static_cast<std::size_t>(id - first_) + 1;  // slots needed
    if (n > ring_.size()) grow(n);
    for (; count_ < n - 1; ++count_) at(count_) = slot{};
    at(count_++) = slot{f, true};
    ++live_;
  }

  // The request with this id, or null if it is not in flight.
  [[nodiscard]] const flight* find(std::uint64_t id) const noexcept {
    if (count_ == 0 || id < first_ || id - first_ >= count_) return nullptr;
    const auto& s = at(static_cast<std::size_t>(id - first_));
    return s.live ? &s.f : nullptr;
  }

  // Takes the request out of flight; false if it was not in flight.
  bool erase(std::uint64_t id) noexcept {
    if (count_ == 0 || id < first_ || id - first_ >= count_) return false;
    auto& s = at(static_cast<std::size_t>(id - first_));
    if (!s.live) return false;
    s.live = false;
    --live_;
    // Retire empty slots at the front, so that the oldest slot is always one in flight.
    while (count_ > 0 && !at(0).live) {
      head_ = (head_ + 1) & (ring_.size() - 1);
      --count_;
      ++first_;
    }
    return true;
  }

  // The oldest request in flight and its id, or null when there is none.
  [[nodiscard]] const flight* oldest(std::uint64_t* id) const noexcept {
    if (live_ == 0) return nullptr;
    *id = first_;
    return &at(0).f;
  }

  // Calls fn(id, flight) for every request in flight, oldest first, until fn returns false.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t i = 0; i < count_; ++i)
      if (at(i).live && !fn(first_ + i, at(i).f)) return;
  }

 private:
  struct slot {
    flight f{};
    bool live = false;
  };
  [[nodiscard]] slot& at(std::size_t i) noexcept { return ring_[(head_ + i) & (ring_.size() - 1)]; }
  [[nodiscard]] const slot& at(std::size_t i) const noexcept {
    return ring_[(head_ + i) & (ring_.size() - 1)];
  }
  void grow(std::size_t need) {
    std::size_t cap = ring_.empty() ? 64 : ring_.size();
    while (cap < need) cap *= 2;
    std::vector<slot> bigger(cap);
    for (std::size_t i = 0; i < count_; ++i) bigger[i] = at(i);
    ring_.swap(bigger);
    head_ = 0;
  }

  std::vector<slot> ring_;  // a power of two long, once used
  std::size_t head_ = 0;    // where the slot of first_ is
  std::size_t count_ = 0;   // slots from first_ on, in flight or not
  std::size_t live_ = 0;    // in flight
  std::uint64_t first_ = 0;
};

}  // namespace ferry::client
