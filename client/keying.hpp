#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "common/envelope.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

// The pre-shared key this process seals its requests with (--key-file, FERRY_KEY_FILE), and
// how: every connection opened after use_key() takes it. Set once, before the first one.
struct key_use {
  std::shared_ptr<const envelope::key> key;
  envelope::mode mode = envelope::mode::plain;
};
void use_key(key_use k);
[[nodiscard]] const key_use& process_key() noexcept;
// Bytes a data reply spends outside its payload, its seal included.
[[nodiscard]] inline std::size_t data_overhead() noexcept {
  return protocol::data_reply_overhead + envelope::trailer_size(process_key().mode);
}

// Reads `path` (FERRY_KEY_FILE if it is empty; none if that is unset too) and makes it the
// process's key, in mode aead if `encrypt`. Throws failure (usage) for an unreadable or
// malformed key file, or --encrypt without a key.
void use_key_file(std::string path, bool encrypt);

// Writes a fresh key to `path`, readable by its owner only, and never over an existing file.
void write_new_key(const std::string& path);

}  // namespace ferry::client
