#include "common/path_safety.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace ferry {

using protocol::errc;

result<std::string> normalize_wire_path(std::string_view wire) noexcept {
  try {
    if (wire.size() > protocol::max_path) return errc::bad_path;
    if (wire.find('\0') != std::string_view::npos) return errc::bad_path;
    if (!wire.empty() && wire.front() == '/') return errc::outside_root;
    std::string out;
    out.reserve(wire.size());
    std::size_t depth = 0;
    while (!wire.empty()) {
      const auto slash = wire.find('/');
      const auto part = wire.substr(0, slash);
      wire = slash == std::string_view::npos ? std::string_view{} : wire.substr(slash + 1);
      if (part.empty() || part == ".") continue;
      if (part == "..") return errc::outside_root;
      if (part.size() > protocol::max_name) return errc::bad_path;
      if (++depth > protocol::max_depth) return errc::bad_path;
      if (!out.empty()) out += '/';
      out += part;
    }
    return out;
  } catch (...) {
    return errc::io_error;
  }
}

errc errc_from_errno(int e) noexcept {
  switch (e) {
    case ENOENT:
      return errc::not_found;
    case ENOTDIR:
      return errc::not_directory;
    case EXDEV:
      return errc::outside_root;  // RESOLVE_BENEATH refused to leave the root
    case ELOOP:
      return errc::symlink_loop;
    case EACCES:
    case EPERM:
      return errc::permission_denied;
    case ENAMETOOLONG:
      return errc::bad_path;
    case ENXIO:  // open(2) of a socket
    case ENODEV:
    case EISDIR:
      return errc::not_regular;
    case EMFILE:
    case ENFILE:
    case EAGAIN:
    case ENOMEM:
      return errc::busy;
    default:
      return errc::io_error;
  }
}

namespace {

std::atomic<bool> g_have_openat2{true};

// The fallback: one component at a time, never following a symlink.
result<unique_fd> walk_beneath(int root_fd, const std::string& rel, int flags) noexcept {
  if (rel.empty()) {
    int fd = ::openat(root_fd, ".", flags | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return errc_from_errno(errno);
    return unique_fd{fd};
  }
  unique_fd dir;
  int at = root_fd;
  std::size_t start = 0;
  for (;;) {
    const auto slash = rel.find('/', start);
    const auto name =
        rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    const bool last = slash == std::string::npos;
    const int f =
        last ? (flags | O_CLOEXEC | O_NOFOLLOW) : (O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    int fd = ::openat(at, name.c_str(), f);
    if (fd < 0) {
      const int e = errno;
      // A symlink, final (ELOOP) or in the middle (ENOTDIR under O_DIRECTORY): refuse it as
      // leaving the root, since this walk cannot check where it goes.
      struct stat st {};
      if (e == ELOOP ||
          (e == ENOTDIR && ::fstatat(at, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISLNK(st.st_mode)))
        return errc::outside_root;
      return errc_from_errno(e);
    }
    if (last) {
      // With O_PATH, O_NOFOLLOW opens the symlink itself; refuse it too.
      struct stat st {};
      if ((flags & O_PATH) && ::fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
        ::close(fd);
        return errc::outside_root;
      }
      return unique_fd{fd};
    }
    dir.reset(fd);
    at = dir.get();
    start = slash + 1;
  }
}

}  // namespace

result<unique_fd> open_beneath(int root_fd, const std::string& rel, int flags) noexcept {
  if (g_have_openat2.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    const char* path = rel.empty() ? "." : rel.c_str();
    for (int attempt = 0;; ++attempt) {
      const long fd = ::syscall(SYS_openat2, root_fd, path, &how, sizeof how);
      if (fd >= 0) return unique_fd{static_cast<int>(fd)};
      // EAGAIN means a concurrent rename raced the lookup and the kernel asks for a retry;
      // bounded, so a local process renaming in a loop cannot pin us here.
      if ((errno == EINTR || errno == EAGAIN) && attempt < 8) continue;
      if (errno != ENOSYS) return errc_from_errno(errno);
      g_have_openat2.store(false, std::memory_order_relaxed);
      break;
    }
  }
  return walk_beneath(root_fd, rel, flags);
}

result<unique_fd> open_regular_beneath(int root_fd, const std::string& rel) noexcept {
  auto path_fd = open_beneath(root_fd, rel, O_PATH);
  if (!path_fd) return path_fd.error();
  struct stat before {};
  if (::fstat(path_fd->get(), &before) != 0) return errc_from_errno(errno);
  if (!S_ISREG(before.st_mode)) return errc::not_regular;
  auto fd = open_beneath(root_fd, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  if (!fd) return fd.error();
  struct stat after {};
  if (::fstat(fd->get(), &after) != 0) return errc_from_errno(errno);
  // Swapped between the two opens: refuse rather than serve something we did not check.
  if (!S_ISREG(after.st_mode) || after.st_ino != before.st_ino || after.st_dev != before.st_dev)
    return errc::not_regular;
  return std::move(*fd);
}

}  // namespace ferry
