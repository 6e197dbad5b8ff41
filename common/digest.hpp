#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/protocol.hpp"

namespace ferry {

// The checksum a data reply carries. It covers the payload and every field that says where the
// payload belongs, so a flipped bit anywhere in the reply's body is caught.
[[nodiscard]] std::uint64_t block_checksum(std::uint64_t offset, bool eof,
                                           const protocol::file_version& version,
                                           std::span<const std::byte> payload) noexcept;

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
