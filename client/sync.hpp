#pragma once

// ferry sync: mirrors a remote directory tree into a local one, fetching only what changed.

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "client/commands.hpp"
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
};

// Syncs `o.path` (a remote directory, "" or "." for the root) into `s.local_dir`. Prints one
// itemized line per change to `out` (unless o.quiet or o.json), or one JSON object at the end.
// A failure in one file does not stop the others; at the end it throws the failure of the first
// file that failed, naming every one.
void run_sync(const command_options& o, const sync_options& s, std::ostream& out);

}  // namespace ferry::client
