#include "common/xxh3_wide.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry::detail {

namespace {
#if defined(__x86_64__)
// xxHash picks its vector code when it is compiled, and a portable build gets SSE2: half the
// speed of AVX2 on a block that is already in the cache, as a received one is.
const bool have_avx2 = __builtin_cpu_supports("avx2");
#endif
}  // namespace

std::uint64_t xxh3_64_seeded(const void* data, std::size_t size, std::uint64_t seed) noexcept {
#if defined(__x86_64__)
  if (have_avx2) return xxh3_64_seeded_avx2(data, size, seed);
#endif
  return XXH3_64bits_withSeed(data, size, seed);
}

void xxh3_128_update(void* state, const void* data, std::size_t size) noexcept {
#if defined(__x86_64__)
  if (have_avx2) return xxh3_128_update_avx2(state, data, size);
#endif
  (void)XXH3_128bits_update(static_cast<XXH3_state_t*>(state), data, size);
}

}  // namespace ferry::detail
