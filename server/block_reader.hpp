#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/protocol.hpp"
#include "common/unique_fd.hpp"
#include "server/client_table.hpp"
#include "server/file_cache.hpp"
#include "server/reply_batch.hpp"
#include "server/stats.hpp"

namespace ferry::server {

// Answers GETs on the loop, from the page cache straight into the reply batch: a run of
// consecutive blocks from a mapping of the file or with one preadv2, one block with one
// preadv2 (RWF_NOWAIT). Whatever would wait for a disk it leaves to the caller, for the
// thread pool. Charges what it sends to the client's rate. Loop thread only.
class block_reader {
 public:
  block_reader(file_cache& files, reply_batch& batch, stats& counters) noexcept
      : files_{files}, batch_{batch}, stats_{counters} {}

  // Answers what it can of a run of consecutive blocks of one file, from the front; returns
  // how many it answered.
  std::size_t serve_run(client_state& c, std::span<const pending_get> run, std::uint64_t now);

  // What became of one GET: answered (its reply is in the batch), refused with `error`, or
  // neither, when it needs the pool (with the file's descriptor if one is cached).
  struct one {
    bool answered = false;
    protocol::errc error = protocol::errc::ok;
    std::shared_ptr<unique_fd> file;
  };
  one serve_one(client_state& c, const pending_get& g, std::uint64_t now);

 private:
  std::size_t serve_mapped(client_state& c, const open_file& f, std::span<const pending_get> run);

  file_cache& files_;   // unowned
  reply_batch& batch_;  // unowned
  stats& stats_;        // unowned
};

}  // namespace ferry::server
