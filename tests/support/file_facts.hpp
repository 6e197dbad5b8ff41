#pragma once

// What the tests know about files and the kernel on their own, not through the server's code:
// stat(2) times in nanoseconds, a file's version as the protocol defines it, and whether the
// kernel offers openat2(2).

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <ctime>
#include <filesystem>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"

namespace ferry::test {

// A stat(2) time as nanoseconds since the epoch, as the protocol carries it.
inline std::int64_t ns_of(const timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// lstat(2) of `p`; fails the test if it fails.
inline struct stat lstat_of(const std::filesystem::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st;
}

// The version PROTOCOL.md defines for the file at `p`, from stat(2).
inline protocol::file_version version_of(const std::filesystem::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
          static_cast<std::uint64_t>(st.st_size), ns_of(st.st_mtim), ns_of(st.st_ctim)};
}

// True where the kernel has openat2 (Linux 5.6). Without it the server walks the path itself and
// refuses every symlink as leaving the root, loops included, which changes what some
// confinement cases answer.
inline bool have_openat2() {
  open_how how{O_PATH | O_CLOEXEC, 0, RESOLVE_BENEATH};
  const unique_fd fd{static_cast<int>(::syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how))};
  return fd || errno != ENOSYS;
}

}  // namespace ferry::test
