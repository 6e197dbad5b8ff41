#include "common/digest.hpp"
#include "common/xxh3_wide.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <system_error>
#include <vector>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ferry {

digest_state::digest_state() : state_{XXH3_createState()} {
  if (state_ == nullptr) throw std::bad_alloc{};
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

digest_state::~digest_state() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void digest_state::update(std::span<const std::byte> bytes) noexcept {
  detail::xxh3_128_update(state_, bytes.data(), bytes.size());
}

protocol::digest128 digest_state::finish() const noexcept {
  const auto h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return {h.high64, h.low64};
}

protocol::digest128 digest_file(int fd) {
  constexpr std::size_t chunk = 1 << 20;
  auto buf = std::make_unique_for_overwrite<std::byte[]>(chunk);
  digest_state state;
  off_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.get(), chunk, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error{errno, std::generic_category(), "read"};
    }
    if (n == 0) break;
    state.update({buf.get(), static_cast<std::size_t>(n)});
    offset += n;
  }
  return state.finish();
}

std::string to_string(const protocol::digest128& d) {
  return fmt::format("xxh3-128:{:016x}{:016x}", d.high, d.low);
}

}  // namespace ferry
