#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/protocol.hpp"

namespace ferry {

// Incremental XXH3-128 over a whole file.
class digest_state {
 public:
  digest_state();
  ~digest_state();
  digest_state(const digest_state&) = delete;
  digest_state& operator=(const digest_state&) = delete;
  void update(std::span<const std::byte> bytes) noexcept;
  [[nodiscard]] protocol::digest128 finish() const noexcept;

 private:
  void* state_;  // XXH3_state_t, kept out of this header
};

// XXH3-128 of the file open at `fd`, read from offset 0 to EOF. Throws std::system_error.
[[nodiscard]] protocol::digest128 digest_file(int fd);

// "xxh3-128:" followed by 32 hex digits.
[[nodiscard]] std::string to_string(const protocol::digest128& d);

}  // namespace ferry
