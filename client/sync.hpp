#pragma once

// ferry sync: mirrors a remote directory tree into a local one, fetching only what changed.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "client/commands.hpp"
#include "client/sync_filter.hpp"
#include "client/sync_plan.hpp"
#include "common/protocol.hpp"

namespace ferry::client {

struct sync_options {
  std::string local_dir;
  std::vector<std::string> mirrors;  // --mirror, in the order given
  bool remove = false;               // --delete
  bool dry_run = false;
  unsigned jobs = 4;  // files transferred at once, each on its own thread and connection
  std::uint32_t block_size = 0;
  bool checksum = false;      // --checksum: a file of the same size is compared by digest
  bool links = false;         // --links: symlinks are made as symlinks
  bool unsafe_links = false;  // --unsafe-links: even those that point outside the sync
  path_filter filter;         // --exclude and --include, in the order given
  bool progress = false;      // a progress line on stderr (a terminal, not -q or --json)
};

// Syncs `o.path` (a remote directory, "" or "." for the root) into `s.local_dir`: files with
// the server's mtime and permission bits (less setuid, setgid and sticky), directories below
// LOCAL_DIR too (set once their contents are written). Prints one
// itemized line per change to `out` (unless o.quiet or o.json), or one JSON object at the end.
// A failure in one file does not stop the others; at the end it throws the failure of the first
// file that failed, naming every one.
void run_sync(const command_options& o, const sync_options& s, std::ostream& out);

}  // namespace ferry::client
