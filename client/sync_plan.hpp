#pragma once

// The decisions of ferry sync, apart from its tree walk and transfers: what is at a local name,
// what to do about a remote file given that, how a change is itemized, and the local-side
// operations the walk uses (lstat that never follows a link, setting an mtime, a digest).

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>

#include "common/protocol.hpp"

namespace ferry::client {

// What a local name is, as lstat(2) sees it: a symlink is never followed.
enum class local_kind : std::uint8_t { missing, file, dir, symlink, other };
struct local_entry {
  local_kind kind = local_kind::missing;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint16_t mode = 0;  // permission bits, st_mode & 07777
};

enum class file_action : std::uint8_t {
  skip,           // same size and mtime: taken as unchanged, as rsync's quick check does
  fetch_new,      // nothing local by that name
  fetch_changed,  // the size differs
  check_digest,   // same size, another mtime (or --checksum): compare digests first
  conflict,       // a directory, symlink or special file where the server has a file
};

// The plan for a remote regular file, given what is at its local name. With `checksum`
// (--checksum), a file of the same size is compared by digest whatever its mtime.
[[nodiscard]] file_action decide_file(const protocol::list_entry& remote, const local_entry& local,
                                      bool checksum = false) noexcept;

// rsync's itemized change string (11 characters, YXcstpoguax) for a regular file: `fetched`
// false means only the mtime or the permissions were set.
[[nodiscard]] std::string itemize_file(bool is_new, bool fetched, bool size_differs,
                                       bool time_differs, bool perms_differ = false);
// The same for an existing directory whose mtime or permissions were set.
[[nodiscard]] std::string itemize_dir(bool time_differs, bool perms_differ);
// A symlink made (`is_new`) or given another target.
[[nodiscard]] std::string itemize_link(bool is_new);
inline constexpr std::string_view itemize_new_dir = "cd+++++++++";
inline constexpr std::string_view itemize_deleting = "*deleting  ";

// --delete keeps NAME.part and NAME.part.state while NAME is a regular file on the server, so
// that an interrupted fetch of it still resumes.
[[nodiscard]] bool kept_on_delete(const std::string& local_name,
                                  const std::set<std::string>& remote_files);

// lstat(2) of `p`: a symlink is never followed; missing if nothing is there. Throws
// failure(local_io) on any other error.
[[nodiscard]] local_entry lstat_local(const std::filesystem::path& p);
// "a file", "a directory" ...: what a conflict message calls a local kind.
[[nodiscard]] std::string_view kind_name(local_kind k) noexcept;
// Sets the mtime of `p` itself (never of a symlink's target); the atime is left alone. Throws
// failure(local_io).
void set_mtime(const std::filesystem::path& p, std::int64_t mtime_ns);
// Sets the permission bits of `p` to `mode` exactly (no umask). Throws failure(local_io).
void set_mode(const std::filesystem::path& p, std::uint16_t mode);
// XXH3-128 of the local file `p`, never through a symlink. Throws failure(local_io).
[[nodiscard]] protocol::digest128 local_digest(const std::filesystem::path& p);

}  // namespace ferry::client
