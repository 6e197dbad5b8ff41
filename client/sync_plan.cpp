#include "client/sync_plan.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "client/errors.hpp"
#include "common/digest.hpp"
#include "common/unique_fd.hpp"

namespace ferry::client {

namespace fs = std::filesystem;

file_action decide_file(const protocol::list_entry& remote, const local_entry& local,
                        bool checksum) noexcept {
  switch (local.kind) {
    case local_kind::missing:
      return file_action::fetch_new;
    case local_kind::file:
      if (local.size != remote.size) return file_action::fetch_changed;
      return local.mtime_ns == remote.mtime_ns && !checksum ? file_action::skip
                                                            : file_action::check_digest;
    default:
      return file_action::conflict;
  }
}

std::string itemize_file(bool is_new, bool fetched, bool size_differs, bool time_differs,
                         bool perms_differ) {
  if (is_new) return ">f+++++++++";
  std::string s = fetched ? ">f........." : ".f.........";
  if (size_differs) s[3] = 's';
  if (time_differs) s[4] = 't';
  if (perms_differ) s[5] = 'p';
  return s;
}

std::string itemize_dir(bool time_differs, bool perms_differ) {
  std::string s = ".d.........";
  if (time_differs) s[4] = 't';
  if (perms_differ) s[5] = 'p';
  return s;
}

std::string itemize_link(bool is_new) { return is_new ? "cL+++++++++" : "cLc........"; }

bool kept_on_delete(const std::string& local_name, const std::set<std::string>& remote_files) {
  for (std::string_view suffix : {".part", ".part.state"}) {
    if (local_name.size() > suffix.size() && local_name.ends_with(suffix) &&
        remote_files.contains(local_name.substr(0, local_name.size() - suffix.size())))
      return true;
  }
  return false;
}

local_entry lstat_local(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    throw failure{exit_code::local_io,
                  fmt::format("cannot stat '{}': {}", p.string(), std::strerror(errno))};
  }
  local_entry e;
  e.kind = S_ISREG(st.st_mode)   ? local_kind::file
           : S_ISDIR(st.st_mode) ? local_kind::dir
           : S_ISLNK(st.st_mode) ? local_kind::symlink
                                 : local_kind::other;
  e.size = static_cast<std::uint64_t>(st.st_size);
  e.mtime_ns = std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  e.mode = static_cast<std::uint16_t>(st.st_mode & protocol::max_mode);
  return e;
}

std::string_view kind_name(local_kind k) noexcept {
  switch (k) {
    case local_kind::missing:
      return "nothing";
    case local_kind::file:
      return "a file";
    case local_kind::dir:
      return "a directory";
    case local_kind::symlink:
      return "a symlink";
    case local_kind::other:
      return "a special file";
  }
  return "?";
}

void set_mtime(const fs::path& p, std::int64_t mtime_ns) {
  std::int64_t sec = mtime_ns / 1'000'000'000, nsec = mtime_ns % 1'000'000'000;
  if (nsec < 0) {
    sec -= 1;
    nsec += 1'000'000'000;
  }
  const timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(sec), static_cast<long>(nsec)}};
  if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    throw failure{exit_code::local_io, fmt::format("cannot set the mtime of '{}': {}", p.string(),
                                                   std::strerror(errno))};
}

void set_mode(const fs::path& p, std::uint16_t mode) {
  if (::chmod(p.c_str(), static_cast<mode_t>(mode)) != 0)
    throw failure{exit_code::local_io,
                  fmt::format("cannot set the mode of '{}': {}", p.string(), std::strerror(errno))};
}

protocol::digest128 local_digest(const fs::path& p) {
  unique_fd fd{::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (!fd)
    throw failure{exit_code::local_io,
                  fmt::format("cannot open '{}': {}", p.string(), std::strerror(errno))};
  try {
    return digest_file(fd.get());
  } catch (const std::exception& e) {
    throw failure{exit_code::local_io, fmt::format("cannot read '{}': {}", p.string(), e.what())};
  }
}

}  // namespace ferry::client
