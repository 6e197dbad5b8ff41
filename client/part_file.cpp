#include "client/part_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "client/errors.hpp"
#include "common/digest.hpp"

namespace ferry::client {
namespace {

constexpr char state_magic[8] = {'F', 'E', 'R', 'R', 'Y', 'S', 'T', '1'};
constexpr std::size_t header_bytes = 64;

[[noreturn]] void fail_io(const std::filesystem::path& p, const char* what, int e) {
  const char* hint =
      e == ENOSPC || e == EDQUOT ? " (free some space, then rerun the same command to resume)"
      : e == EACCES || e == EPERM || e == EROFS ? " (choose a writable place with -o)"
      : e == ENOENT                             ? " (does the directory exist?)"
      : e == ELOOP ? " (it is a symbolic link, and ferry never writes through one; remove it)"
                   : "";
  throw failure{exit_code::local_io,
                fmt::format("cannot {} '{}': {}{}", what, p.string(), std::strerror(e), hint)};
}

void put64(std::byte* p, std::uint64_t v) { std::memcpy(p, &v, 8); }
std::uint64_t get64(const std::byte* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

bool all_zero(std::span<const std::byte> data) {
  // Holes in the sparse output already read as zeros, so zero blocks need no write.
  constexpr std::size_t word = sizeof(std::uint64_t);
  std::size_t i = 0;
  for (; i + word <= data.size(); i += word) {
    std::uint64_t v;
    std::memcpy(&v, data.data() + i, word);
    if (v != 0) return false;
  }
  for (; i < data.size(); ++i)
    if (data[i] != std::byte{0}) return false;
  return true;
}

}  // namespace

part_file::part_file(const std::filesystem::path& out, const protocol::file_version& version,
                     std::uint32_t block)
    : out_{out}, data_path_{out.string() + ".part"}, state_path_{out.string() + ".part.state"} {
  // Never through a symbolic link planted under either name: it could point anywhere.
  const int fd = ::open(data_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail_io(data_path_, "create", errno);
  data_.reset(fd);
  const int sfd = ::open(state_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (sfd < 0) fail_io(state_path_, "create", errno);
  state_.reset(sfd);
  if (load_state(version)) {
    resumed_ = true;
    return;
  }
  start_fresh(version, block);
}

part_file::part_file(const temporary& where, const protocol::file_version& version,
                     std::uint32_t block)
    : data_path_{where.dir / "ferry-stream.XXXXXX"} {
  std::string name = data_path_.string();
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) fail_io(where.dir, "create a temporary file in", errno);
  data_.reset(fd);
  // Unnamed at once: nothing is left behind, however ferry ends.
  (void)::unlink(name.c_str());
  data_path_ = "a temporary file in " + where.dir.string();
  start_fresh(version, block);
}

bool part_file::load_state(const protocol::file_version& version) {
  struct stat st {};
  if (::fstat(state_.get(), &st) != 0 || st.st_size < static_cast<off_t>(header_bytes + 8))
    return false;
  struct stat data_st {};
  if (::fstat(data_.get(), &data_st) != 0) return false;
  // The header first: whatever file sits under this name, its size must be what the header
  // and the remote file's version imply before anything is allocated for it.
  std::byte header[header_bytes];
  if (::pread(state_.get(), header, header_bytes, 0) != static_cast<ssize_t>(header_bytes))
    return false;
  if (std::memcmp(header, state_magic, 8) != 0) return false;
  protocol::file_version v{get64(&header[8]), get64(&header[16]), get64(&header[24]),
                           static_cast<std::int64_t>(get64(&header[32])),
                           static_cast<std::int64_t>(get64(&header[40]))};
  std::uint32_t block = 0;
  std::memcpy(&block, &header[48], 4);
  const auto blocks = get64(&header[56]);
  if (v != version || block == 0 || block > protocol::max_block_size) return false;
  if (blocks != version.size / block + (version.size % block != 0 ? 1 : 0) || blocks > max_blocks)
    return false;
  const auto body = header_bytes + (blocks + 7) / 8;
  if (static_cast<std::uint64_t>(st.st_size) != body + 8) return false;
  if (static_cast<std::uint64_t>(data_st.st_size) != version.size) return false;
  std::vector<std::byte> image(body + 8);
  if (::pread(state_.get(), image.data(), image.size(), 0) != static_cast<ssize_t>(image.size()))
    return false;
  if (XXH3_64bits(image.data(), body) != get64(image.data() + body))
    return false;  // torn, or changed since the header was read
  version_ = version;
  block_ = block;
  blocks_ = blocks;
  image_ = std::move(image);
  hash_ = std::make_unique<digest_state>();
  hashed_ = 0;
  done_ = 0;
  for (std::uint64_t i = 0; i < blocks_; ++i) done_ += is_done(i) ? 1 : 0;
  return true;
}

std::uint32_t part_file::blocks_for(std::uint64_t size, std::uint32_t wish,
                                    std::uint32_t cap) noexcept {
  // Rounded up without size + max_blocks - 1, which a claimed size near 2^64 would wrap.
  const auto least = size / max_blocks + (size % max_blocks != 0 ? 1 : 0);
  if (least <= wish) return wish;
  return least <= cap ? static_cast<std::uint32_t>(least) : 0;
}

void part_file::start_fresh(const protocol::file_version& version, std::uint32_t block) {
  if (block == 0 || blocks_for(version.size, block, block) != block)
    throw failure{exit_code::internal,
                  fmt::format("{} bytes in blocks of {} are too many blocks", version.size, block)};
  version_ = version;
  block_ = block;
  blocks_ = version.size / block + (version.size % block != 0 ? 1 : 0);
  done_ = 0;
  resumed_ = false;
  hash_ = std::make_unique<digest_state>();
  hashed_ = 0;
  // Drop whatever an older version left, then size the file: unwritten blocks stay holes.
  if (::ftruncate(data_.get(), 0) != 0) fail_io(data_path_, "truncate", errno);
  if (::ftruncate(data_.get(), static_cast<off_t>(version.size)) != 0)
    fail_io(data_path_, "size", errno);
  image_.assign(header_bytes + (blocks_ + 7) / 8 + 8, std::byte{0});
  std::memcpy(image_.data(), state_magic, 8);
  put64(&image_[8], version.dev);
  put64(&image_[16], version.ino);
  put64(&image_[24], version.size);
  put64(&image_[32], static_cast<std::uint64_t>(version.mtime_ns));
  put64(&image_[40], static_cast<std::uint64_t>(version.ctime_ns));
  std::memcpy(&image_[48], &block, 4);
  put64(&image_[56], blocks_);
  if (state_ && ::ftruncate(state_.get(), 0) != 0) fail_io(state_path_, "truncate", errno);
  dirty_ = true;
  discarded_ = 0;
  flush();
}

void part_file::restart(const protocol::file_version& version, std::uint32_t block) {
  start_fresh(version, block);
}

std::byte* part_file::bitmap() noexcept { return image_.data() + header_bytes; }
const std::byte* part_file::bitmap() const noexcept { return image_.data() + header_bytes; }

bool part_file::is_done(std::uint64_t index) const noexcept {
  return (std::to_integer<unsigned>(bitmap()[index / 8]) >> (index % 8)) & 1u;
}

std::uint64_t part_file::block_length(std::uint64_t index) const noexcept {
  const auto offset = index * block_;
  return std::min<std::uint64_t>(block_, version_.size - offset);
}

std::uint64_t part_file::done_bytes() const noexcept {
  if (done_ == 0) return 0;
  // Every done block is full-sized except possibly the last one.
  std::uint64_t bytes = done_ * block_;
  if (blocks_ > 0 && is_done(blocks_ - 1)) bytes -= block_ - block_length(blocks_ - 1);
  return bytes;
}

void part_file::set_done(std::uint64_t index, bool done) noexcept {
  const auto bit = std::byte{static_cast<unsigned char>(1u << (index % 8))};
  if (done)
    bitmap()[index / 8] |= bit;
  else
    bitmap()[index / 8] &= ~bit;
  if (done)
    ++done_;
  else
    --done_;
  dirty_ = true;
}

void part_file::store(std::uint64_t index, std::span<const std::byte> data) {
  if (is_done(index)) return;
  set_done(index, true);
  // Holes in the sparse output already read as zeros, so zero blocks need no write.
  if (!all_zero(data)) pending_.push_back({index, data});
  if (index == hashed_) {
    // In order: hash it now, while it is in the cache. What follows it, if it came earlier,
    // is read back after the write.
    hash_->update(data);
    ++hashed_;
  }
}

void part_file::write_pending() {
  // Runs of blocks that follow each other in the file, each written with one pwritev.
  constexpr std::size_t max_iov = 1024;
  iovec iov[max_iov];
  std::size_t first = 0;
  while (first < pending_.size()) {
    std::size_t n = 1;
    std::size_t bytes = pending_[first].data.size();
    while (first + n < pending_.size() && n < max_iov &&
           pending_[first + n].index == pending_[first + n - 1].index + 1 &&
           pending_[first + n - 1].data.size() == block_) {
      bytes += pending_[first + n].data.size();
      ++n;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const auto d = pending_[first + i].data;
      iov[i] = iovec{const_cast<std::byte*>(d.data()), d.size()};
    }
    auto offset = static_cast<off_t>(pending_[first].index * block_);
    iovec* v = iov;
    int left = static_cast<int>(n);
    while (bytes > 0) {
      const ssize_t w = ::pwritev(data_.get(), v, left, offset);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const int e = w < 0 ? errno : EIO;
        // Whatever did not reach the file is not done: the state file must not say otherwise.
        for (std::size_t i = first; i < pending_.size(); ++i) {
          const auto index = pending_[i].index;
          const auto end = static_cast<off_t>(index * block_ + pending_[i].data.size());
          if (i >= first + n || end > offset) set_done(index, false);
        }
        pending_.clear();
        // Blocks hashed in order may be among them; a rerun hashes what is done afresh.
        hash_ = std::make_unique<digest_state>();
        hashed_ = 0;
        try {
          save_state();  // keep what is done, so a rerun after freeing space resumes
        } catch (...) {
        }
        fail_io(data_path_, "write", e);
      }
      offset += w;
      bytes -= static_cast<std::size_t>(w);
      // Step over the buffers written whole, and into the one written in part.
      auto done = static_cast<std::size_t>(w);
      while (left > 0 && done >= v->iov_len) {
        done -= v->iov_len;
        ++v;
        --left;
      }
      if (left > 0) {
        v->iov_base = static_cast<std::byte*>(v->iov_base) + done;
        v->iov_len -= done;
      }
    }
    first += n;
  }
  pending_.clear();
  hash_done_blocks();
}

void part_file::hash_done_blocks() {
  // Blocks that came ahead of a lost one are read back once it is in, many at a time.
  constexpr std::uint64_t read_back_bytes = 1 << 20;
  while (hashed_ < blocks_ && is_done(hashed_)) {
    std::uint64_t end = hashed_ + 1;
    const auto most = std::max<std::uint64_t>(1, read_back_bytes / block_);
    while (end < blocks_ && end - hashed_ < most && is_done(end)) ++end;
    const auto offset = hashed_ * block_;
    const auto length =
        static_cast<std::size_t>(std::min<std::uint64_t>(end * block_, version_.size) - offset);
    if (read_back_.size() < length) read_back_.resize(length);
    read(offset, {read_back_.data(), length});
    hash_->update({read_back_.data(), length});
    hashed_ = end;
  }
}

std::uint64_t part_file::in_order_bytes() const noexcept {
  return std::min<std::uint64_t>(hashed_ * block_, version_.size);
}

void part_file::read(std::uint64_t offset, std::span<std::byte> out) {
  std::size_t at = 0;
  while (at < out.size()) {
    const ssize_t n =
        ::pread(data_.get(), out.data() + at, out.size() - at, static_cast<off_t>(offset + at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_io(data_path_, "read back", n < 0 ? errno : EIO);
    at += static_cast<std::size_t>(n);
  }
}

void part_file::discard_before(std::uint64_t offset) {
  // In steps of 1 MiB, so the file system frees whole extents and this costs little.
  constexpr std::uint64_t step = 1 << 20;
  const auto end = std::min(offset, in_order_bytes()) / step * step;
  if (state_ || end <= discarded_) return;
  // Holes read as zeros, which nothing reads again; a file system that cannot punch them
  // keeps the bytes, and only the space is not given back.
  (void)::fallocate(data_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(discarded_), static_cast<off_t>(end - discarded_));
  discarded_ = end;
}

void part_file::flush() {
  write_pending();
  save_state();
}

void part_file::save_state() {
  if (!state_) dirty_ = false;  // a temporary part file keeps no state
  if (!dirty_) return;
  const auto body = image_.size() - 8;
  put64(image_.data() + body, XXH3_64bits(image_.data(), body));
  // A short write is asked again for the rest, so that what stopped it (a full disk, most
  // often) is what gets reported.
  std::size_t written = 0;
  while (written < image_.size()) {
    const auto w = ::pwrite(state_.get(), image_.data() + written, image_.size() - written,
                            static_cast<off_t>(written));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail_io(state_path_, "write", errno);
    if (w == 0)
      throw failure{exit_code::local_io,
                    fmt::format("cannot write '{}': only {} of {} bytes were written",
                                state_path_.string(), written, image_.size())};
    written += static_cast<std::size_t>(w);
  }
  dirty_ = false;
}

protocol::digest128 part_file::digest() {
  write_pending();
  if (hashed_ != blocks_) throw failure{exit_code::internal, "digest of an incomplete file"};
  return hash_->finish();
}

void part_file::commit(bool keep_mtime, bool replace, std::optional<std::uint16_t> mode) {
  if (!state_) throw failure{exit_code::internal, "a temporary part file has no name to commit"};
  flush();
  // Like the mtime, set before the rename, so the file never appears under its name with
  // other permissions than the ones asked for.
  if (mode && ::fchmod(data_.get(), static_cast<mode_t>(*mode)) != 0)
    fail_io(data_path_, "set the mode of", errno);
  if (keep_mtime) {
    // Set before the rename, so the file appears under its name with the server's time.
    auto sec = version_.mtime_ns / 1'000'000'000, nsec = version_.mtime_ns % 1'000'000'000;
    if (nsec < 0) {
      sec -= 1;
      nsec += 1'000'000'000;
    }
    const timespec times[2] = {{0, UTIME_OMIT},
                               {static_cast<time_t>(sec), static_cast<long>(nsec)}};
    if (::futimens(data_.get(), times) != 0) fail_io(data_path_, "set the mtime of", errno);
  }
  if (!replace) {
    int rc = ::renameat2(AT_FDCWD, data_path_.c_str(), AT_FDCWD, out_.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      // A file system without RENAME_NOREPLACE (NFS, some FUSE): a hard link fails the same
      // way on an existing name, and the part file's name is then dropped.
      rc = ::link(data_path_.c_str(), out_.c_str());
      if (rc == 0) (void)::unlink(data_path_.c_str());
    }
    if (rc != 0) {
      if (errno == EEXIST)
        throw failure{exit_code::local_io,
                      fmt::format("'{}' appeared during the transfer and is not replaced "
                                  "(--no-clobber); the file is in '{}'",
                                  out_.string(), data_path_.string())};
      fail_io(out_, "rename into", errno);
    }
  } else {
    std::error_code ec;
    std::filesystem::rename(data_path_, out_, ec);
    if (ec) fail_io(out_, "rename into", ec.value());
  }
  std::error_code ec;
  data_.reset();
  state_.reset();
  std::filesystem::remove(state_path_, ec);
}

}  // namespace ferry::client
