#pragma once

// ferry sync: mirrors a remote directory tree into a local one, fetching only what changed.

#include <cstdint>
#include <iosfwd>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "client/commands.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

struct sync_options {
  std::string local_dir;
  std::vector<std::string> mirrors;  // --mirror, in the order given
  bool remove = false;               // --delete
  bool dry_run = false;
  unsigned jobs = 4;  // files transferred at once, each on its own thread and connection
  std::uint32_t block_size = 0;
};

// Syncs `o.path` (a remote directory, "" or "." for the root) into `s.local_dir`. Prints one
// itemized line per change to `out` (unless o.quiet or o.json), or one JSON object at the end.
// A failure in one file does not stop the others; at the end it throws the failure of the first
// file that failed, naming every one.
void run_sync(const command_options& o, const sync_options& s, std::ostream& out);

// What a local name is, as lstat(2) sees it: a symlink is never followed.
enum class local_kind : std::uint8_t { missing, file, dir, symlink, other };
struct local_entry {
  local_kind kind = local_kind::missing;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};

enum class file_action : std::uint8_t {
  skip,           // same size and mtime: taken as unchanged, as rsync's quick check does
  fetch_new,      // nothing local by that name
  fetch_changed,  // the size differs
  check_digest,   // same size, another mtime: compare digests before fetching anything
  conflict,       // a directory, symlink or special file where the server has a file
};

// The plan for a remote regular file, given what is at its local name.
[[nodiscard]] file_action decide_file(const protocol::list_entry& remote,
                                      const local_entry& local) noexcept;

// rsync's itemized change string (11 characters, YXcstpoguax) for a regular file: `fetched`
// false means only the mtime was set.
[[nodiscard]] std::string itemize_file(bool is_new, bool fetched, bool size_differs,
                                       bool time_differs);
inline constexpr std::string_view itemize_new_dir = "cd+++++++++";
inline constexpr std::string_view itemize_deleting = "*deleting  ";

// --delete keeps NAME.part and NAME.part.state while NAME is a regular file on the server, so
// that an interrupted fetch of it still resumes.
[[nodiscard]] bool kept_on_delete(const std::string& local_name,
                                  const std::set<std::string>& remote_files);

}  // namespace ferry::client
