#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "common/protocol.hpp"

namespace ferry::client {

// Exit codes, one per class of failure. Documented in the README and ferry --help.
enum class exit_code : int {
  ok = 0,
  internal = 1,
  usage = 2,
  refused = 3,        // the server refused: not found, not a regular file, outside the root ...
  network = 4,        // no answer before the timeout, or the address does not resolve
  integrity = 5,      // digest mismatch, or the file kept changing during the transfer
  local_io = 6,       // cannot write the output: disk full, permission, ...
  auth = 7,           // the pre-shared key: the server needs one, has none, or another mode
  interrupted = 130,  // SIGINT or SIGTERM; what is done is kept for a rerun
};

// A failure that ends a command. Thrown outside libuv callbacks only.
class failure : public std::runtime_error {
 public:
  failure(exit_code code, const std::string& what) : std::runtime_error{what}, code_{code} {}
  [[nodiscard]] exit_code code() const noexcept { return code_; }

 private:
  exit_code code_;
};

// The exit class for an error code a server sent.
[[nodiscard]] exit_code exit_code_for(protocol::errc e) noexcept;

// The failure for servers (`who`, one address or several) that gave no answer for `seconds`,
// or only "busy"; `port` 0 names none; `then` is what to do about it, after a semicolon.
[[nodiscard]] failure no_answer(std::string_view who, double seconds, std::uint16_t port,
                                bool only_busy, std::string_view then = {});

// Throws the failure for a server's refusal of `path`, with a hint at what to do about it.
[[noreturn]] void throw_refused(const std::string& path, protocol::errc e);
// The same for an error reply, whose text says more where the code alone would not: why the
// server wants authentication.
[[noreturn]] void throw_refused(const std::string& path, const protocol::error_reply& e);

}  // namespace ferry::client
