#pragma once

// Keys for tests of the pre-shared key: the same bytes always make the same key.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/envelope.hpp"

namespace ferry::test {

// The key whose 32 secret bytes are all `fill`.
inline std::shared_ptr<const envelope::key> key_of(std::uint8_t fill) {
  std::array<std::byte, envelope::key::size> secret{};
  secret.fill(std::byte{fill});
  return std::make_shared<const envelope::key>(
      std::span<const std::byte, envelope::key::size>{secret});
}

}  // namespace ferry::test
