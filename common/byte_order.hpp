#pragma once

// Fixed-width integers to and from bytes in a stated order, whatever the host's: the header of
// a datagram is big-endian (network order), its body little-endian (cereal's portable binary
// with the LittleEndian option), and SipHash reads little-endian words.

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ferry::bytes {

template <class T>
requires std::is_unsigned_v<T>
inline void put_le(std::byte* p, T v) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i, v = static_cast<T>(v >> 8))
    p[i] = std::byte(v & 0xff);
}

template <class T>
requires std::is_unsigned_v<T>
[[nodiscard]] inline T get_le(const std::byte* p) noexcept {
  T v = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) v = static_cast<T>(v << 8 | std::to_integer<T>(p[i]));
  return v;
}

template <class T>
requires std::is_unsigned_v<T>
inline void put_be(std::byte* p, T v) noexcept {
  for (std::size_t i = sizeof(T); i-- > 0; v = static_cast<T>(v >> 8)) p[i] = std::byte(v & 0xff);
}

template <class T>
requires std::is_unsigned_v<T>
[[nodiscard]] inline T get_be(const std::byte* p) noexcept {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v << 8 | std::to_integer<T>(p[i]));
  return v;
}

}  // namespace ferry::bytes
