#pragma once

// XXH3 over large buffers (block payloads, whole files) with AVX2 where the CPU has it. The
// results are those of the portable code: XXH3 is defined independently of the vector unit.
// xxHash stays compiled in (XXH_INLINE_ALL), so the binaries need no libxxhash at run time.

#include <cstddef>
#include <cstdint>

namespace ferry::detail {

[[nodiscard]] std::uint64_t xxh3_64_seeded(const void* data, std::size_t size,
                                           std::uint64_t seed) noexcept;
// Adds `data` to an XXH3-128 streaming state (an XXH3_state_t, reset for 128 bits).
void xxh3_128_update(void* state, const void* data, std::size_t size) noexcept;

#if defined(__x86_64__)
// The same, built with -mavx2; called only when the CPU has AVX2.
[[nodiscard]] std::uint64_t xxh3_64_seeded_avx2(const void* data, std::size_t size,
                                                std::uint64_t seed) noexcept;
void xxh3_128_update_avx2(void* state, const void* data, std::size_t size) noexcept;
#endif

}  // namespace ferry::detail
