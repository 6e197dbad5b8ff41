#pragma once

#include <cstdint>
#include <string>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"

namespace ferry::server {

// The directory ferryd serves, held open: requests are resolved beneath this descriptor, not
// beneath its name. It tells the operator, once, when the directory is deleted, and at most once
// a minute when ferryd's user may not read it.
class served_root {
 public:
  // Throws std::runtime_error, with a message for the user, if `path` is no directory to open.
  explicit served_root(std::string path);

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // Logs an error the first time the directory is found deleted. Call it now and then.
  void check() noexcept;
  // A request for the root itself was refused with `code` at `now_ms`.
  void refused(protocol::errc code, std::uint64_t now_ms) noexcept;

 private:
  std::string path_;
  unique_fd fd_;
  bool gone_ = false;
  std::uint64_t refused_ms_ = 0;
};

}  // namespace ferry::server
