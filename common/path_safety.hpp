#pragma once

// Confinement of wire paths to the served root. The string check rejects what can never be
// valid; the kernel (openat2 with RESOLVE_BENEATH) enforces the rest, symlinks included.

#include <string>
#include <string_view>

#include "common/protocol.hpp"
#include "common/result.hpp"
#include "common/unique_fd.hpp"

namespace ferry {

// Turns a wire path into a clean relative path: components joined by '/', "" for the root.
// Empty and "." components are dropped. Refuses NUL, absolute paths and ".." (outside_root),
// and over-long names, paths or depths (bad_path).
[[nodiscard]] result<std::string> normalize_wire_path(std::string_view wire) noexcept;

// Maps an errno from opening or reading a path to the code a client is told.
[[nodiscard]] protocol::errc errc_from_errno(int e) noexcept;

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
