// Built with -mavx2 (see common/CMakeLists.txt), so xxHash compiles its AVX2 code here.
// Called through xxh3_wide.cpp only on a CPU that has AVX2.

#include "common/xxh3_wide.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::detail {

std::uint64_t xxh3_64_seeded_avx2(const void* data, std::size_t size, std::uint64_t seed) noexcept {
  return XXH3_64bits_withSeed(data, size, seed);
}

void xxh3_128_update_avx2(void* state, const void* data, std::size_t size) noexcept {
  (void)XXH3_128bits_update(static_cast<XXH3_state_t*>(state), data, size);
}

}  // namespace ferry::detail
