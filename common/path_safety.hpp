#pragma once

// Confinement of wire paths to the served root. The string check rejects what can never be
// valid; the kernel (openat2 with RESOLVE_BENEATH) enforces the rest, symlinks included.

#include <string>
#include <string_view>

#include "common/protocol.hpp"
#include "common/result.hpp"

namespace ferry {

// Turns a wire path into a clean relative path: components joined by '/', "" for the root.
// Empty and "." components are dropped. Refuses NUL, absolute paths and ".." (outside_root),
// and over-long names, paths or depths (bad_path).
[[nodiscard]] result<std::string> normalize_wire_path(std::string_view wire) noexcept;

// Maps an errno from opening or reading a path to the code a client is told.
[[nodiscard]] protocol::errc errc_from_errno(int e) noexcept;

// An owned file descriptor; -1 means none.
class unique_fd {
 public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_{fd} {}
  unique_fd(unique_fd&& o) noexcept : fd_{o.release()} {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }
  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Opens `rel` (already normalized) beneath `root_fd` with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_MAGICLINKS). `flags` are open(2) flags; O_CLOEXEC is always added. Where the kernel
// lacks openat2, it walks the components with O_NOFOLLOW and refuses every symlink.
[[nodiscard]] result<unique_fd> open_beneath(int root_fd, const std::string& rel,
                                             int flags) noexcept;

// Opens a regular file for reading without ever opening anything else: the path is first
// opened with O_PATH (no side effects, cannot block) and checked to be a regular file, then
// opened again O_RDONLY|O_NONBLOCK and checked to be the same inode. errc::not_regular for
// directories, FIFOs, sockets and devices.
[[nodiscard]] result<unique_fd> open_regular_beneath(int root_fd, const std::string& rel) noexcept;

}  // namespace ferry
