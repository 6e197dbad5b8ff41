#pragma once

#include <array>
#include <cstdint>

namespace ferry::impair {

// SplitMix64 (Steele, Lea, Flood). Used only to expand a 64-bit seed into xoshiro state, as its
// authors recommend, so that nearby seeds still give unrelated streams.
class splitmix64 {
 public:
  explicit splitmix64(std::uint64_t seed) noexcept : state_{seed} {}

  // Returns the next value of the sequence.
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_;
};

// xoshiro256** (Blackman, Vigna). We implement it ourselves rather than use <random> so that the
// sequence is identical across standard libraries and versions, which keeps runs reproducible.
class xoshiro256ss {
 public:
  explicit xoshiro256ss(std::uint64_t seed) noexcept {
    splitmix64 expand{seed};
    for (auto& word : s_) word = expand.next();
  }

  // Returns the next 64 random bits.
  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Returns a double uniformly distributed in [0, 1), built from the top 53 bits.
  double uniform01() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

  std::array<std::uint64_t, 4> s_{};
};

}  // namespace ferry::impair
