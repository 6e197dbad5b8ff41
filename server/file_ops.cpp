#include "server/file_ops.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>

#include "common/path_safety.hpp"

namespace ferry::server {

using protocol::errc;

namespace {
std::int64_t ns_of(const timespec& ts) noexcept {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

protocol::file_version version_of(const struct stat& st) noexcept {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
          static_cast<std::uint64_t>(st.st_size), ns_of(st.st_mtim), ns_of(st.st_ctim)};
}

std::int64_t mtime_ns_of(const struct stat& st) noexcept { return ns_of(st.st_mtim); }

protocol::entry_type type_of(mode_t mode) noexcept {
  if (S_ISREG(mode)) return protocol::entry_type::file;
  if (S_ISDIR(mode)) return protocol::entry_type::dir;
  if (S_ISLNK(mode)) return protocol::entry_type::symlink;
  return protocol::entry_type::other;
}

result<stat_info> stat_beneath(int root_fd, const std::string& rel) noexcept {
  auto path_fd = open_beneath(root_fd, rel, O_PATH);
  if (!path_fd) return path_fd.error();
  struct stat st {};
  if (::fstat(path_fd->get(), &st) != 0) return errc_from_errno(errno);
  stat_info info;
  info.type = type_of(st.st_mode);
  info.version = version_of(st);
  info.mtime_ns = mtime_ns_of(st);
  info.mode = static_cast<std::uint16_t>(st.st_mode & protocol::max_mode);
  if (S_ISREG(st.st_mode)) {
    auto fd = open_regular_beneath(root_fd, rel);
    if (!fd) return fd.error();
    info.fd = std::move(*fd);
  }
  return info;
}

read_outcome read_block(int fd, std::uint64_t offset, std::uint32_t block, std::byte* out,
                        bool nowait) noexcept {
  read_outcome r;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    r.error = errc_from_errno(errno);
    return r;
  }
  r.version = version_of(st);
  const auto size = r.version.size;
  if (offset > size) {
    r.error = errc::bad_request;
    return r;
  }
  const auto want = static_cast<std::uint32_t>(std::min<std::uint64_t>(block, size - offset));
  std::uint32_t got = 0;
  while (got < want) {
    iovec iov{out + got, want - got};
    const ssize_t n =
        ::preadv2(fd, &iov, 1, static_cast<off_t>(offset + got), nowait ? RWF_NOWAIT : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (nowait && (errno == EAGAIN || errno == EOPNOTSUPP)) {
        r.would_block = true;
        return r;
      }
      r.error = errc_from_errno(errno);
      return r;
    }
    if (n == 0) break;  // the file shrank under us
    got += static_cast<std::uint32_t>(n);
    // A short RWF_NOWAIT read means part of the range is not cached: finish it in the pool.
    if (nowait && got < want) {
      r.would_block = true;
      return r;
    }
  }
  if (got < want) {
    // Report the file as it is now; the client sees the new version and starts over.
    if (::fstat(fd, &st) != 0) {
      r.error = errc_from_errno(errno);
      return r;
    }
    r.version = version_of(st);
    if (offset + got != r.version.size) {
      r.error = errc::io_error;
      return r;
    }
  }
  r.length = got;
  r.eof = offset + got == r.version.size;
  return r;
}

std::size_t read_blocks(int fd, std::uint64_t offset, std::uint32_t block,
                        std::span<std::byte* const> slots, std::span<read_outcome> out,
                        bool nowait) noexcept {
  constexpr std::size_t max_iov = 64;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  const auto version = version_of(st);
  const auto size = version.size;
  iovec iov[max_iov];
  std::size_t n = 0;
  std::uint64_t at = offset;
  for (; n < std::min({slots.size(), out.size(), max_iov}) && at <= size; ++n) {
    const auto want = static_cast<std::uint32_t>(std::min<std::uint64_t>(block, size - at));
    iov[n] = iovec{slots[n], want};
    out[n] = read_outcome{};
    out[n].version = version;
    out[n].length = want;
    out[n].eof = at + want == size;
    at += want;
    if (out[n].eof) {
      ++n;
      break;
    }
  }
  if (n == 0) return 0;
  ssize_t got = -1;
  do {
    got = ::preadv2(fd, iov, static_cast<int>(n), static_cast<off_t>(offset),
                    nowait ? RWF_NOWAIT : 0);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return 0;
  // Only blocks that arrived whole count; a short read leaves the rest to read_block.
  std::size_t whole = 0;
  for (auto left = static_cast<std::uint64_t>(got); whole < n && out[whole].length <= left; ++whole)
    left -= out[whole].length;
  return whole;
}

namespace {

constexpr std::uint64_t page_size = 4096;
constexpr std::uint64_t max_resident_query = 4u << 20;

// The guard of the read_mapped() running on this thread, if any.
thread_local sigjmp_buf* mapped_read_guard = nullptr;
struct sigaction previous_sigbus {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* guard = mapped_read_guard; guard != nullptr) siglongjmp(*guard, 1);
  // Not a read of ours: do what would have been done without this handler.
  if ((previous_sigbus.sa_flags & SA_SIGINFO) != 0 && previous_sigbus.sa_sigaction != nullptr) {
    previous_sigbus.sa_sigaction(sig, info, context);
  } else if (previous_sigbus.sa_handler != SIG_IGN && previous_sigbus.sa_handler != SIG_DFL &&
             previous_sigbus.sa_handler != nullptr) {
    previous_sigbus.sa_handler(sig);
  } else {
    ::signal(SIGBUS, SIG_DFL);
    ::raise(SIGBUS);
  }
}

void install_sigbus_handler() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    // SA_NODEFER: the handler leaves by siglongjmp, which does not restore the signal mask.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &previous_sigbus);
  });
}

}  // namespace

std::shared_ptr<const file_mapping> file_mapping::map(int fd, std::uint64_t offset,
                                                      std::uint64_t length,
                                                      bool populate) noexcept {
  const auto base_offset = offset / page_size * page_size;
  const auto span = offset + length - base_offset;
  if (length == 0 || span > static_cast<std::uint64_t>(PTRDIFF_MAX) || offset + length < offset)
    return nullptr;
  install_sigbus_handler();
  void* p = ::mmap(nullptr, static_cast<std::size_t>(span), PROT_READ,
                   MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, static_cast<off_t>(base_offset));
  if (p == MAP_FAILED) return nullptr;
  try {
    return std::shared_ptr<const file_mapping>{
        new file_mapping{static_cast<const std::byte*>(p), base_offset,
                         static_cast<std::size_t>(span), offset, length}};
  } catch (...) {
    ::munmap(p, static_cast<std::size_t>(span));
    return nullptr;
  }
}

file_mapping::~file_mapping() { ::munmap(const_cast<std::byte*>(base_), mapped_); }

bool file_mapping::resident(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (length == 0) return true;
  if (offset < offset_ || offset + length > end() || offset + length < offset) return false;
  const auto first = offset / page_size * page_size;
  const auto span = offset + length - first;
  if (span > max_resident_query) return false;
  unsigned char pages[max_resident_query / page_size + 1];
  const auto n = (span + page_size - 1) / page_size;
  if (::mincore(const_cast<std::byte*>(at(first)), static_cast<std::size_t>(span), pages) != 0)
    return false;
  return std::all_of(pages, pages + n, [](unsigned char p) { return (p & 1) != 0; });
}

bool read_mapped(void (*fn)(void*), void* ctx) noexcept {
  install_sigbus_handler();
  sigjmp_buf env;
  if (sigsetjmp(env, 0) != 0) {
    mapped_read_guard = nullptr;
    return false;
  }
  mapped_read_guard = &env;
  fn(ctx);
  mapped_read_guard = nullptr;
  return true;
}

bool reads_from_memory(int fd) noexcept {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) return false;
  return fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC;
}

}  // namespace ferry::server
