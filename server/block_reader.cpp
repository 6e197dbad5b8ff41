#include "server/block_reader.hpp"

#include <sys/stat.h>

#include <algorithm>

#include "server/file_ops.hpp"
#include "server/scheduler.hpp"

namespace ferry::server {

namespace {
// Runs of at least this many bytes are sent from a mapping of the file rather than read.
constexpr std::uint64_t min_mapped_run = 48 * 1024;
}  // namespace

std::size_t block_reader::serve_run(client_state& c, std::span<const pending_get> run,
                                    std::uint64_t now) {
  const auto* cached = files_.find(run[0].rel, now);
  if (cached == nullptr) return 0;
  // A sealed reply is built in one piece, so a mapping would only add a copy.
  std::size_t done = cached->whole && !batch_.sealed() ? serve_mapped(c, *cached, run) : 0;
  if (done > 0 || run.size() < 2) return done;
  const auto block = run[0].block;
  std::byte* slots[scheduler::max_run];
  read_outcome outcomes[scheduler::max_run];
  const auto n = batch_.payload_slots(block, {slots, std::min(run.size(), scheduler::max_run)});
  const auto whole = read_blocks(cached->fd->get(), run[0].offset, block, {slots, n}, {outcomes, n},
                                 !cached->in_memory);
  for (; done < whole; ++done) {
    if (batch_.next_payload() != slots[done]) break;
    ++stats_.reads_inline;
    batch_.add(c, run[done].id, run[done].offset, outcomes[done]);
    c.rate.charge(outcomes[done].length + protocol::data_reply_overhead);
    c.payload_sent += outcomes[done].length;
  }
  return done;
}

std::size_t block_reader::serve_mapped(client_state& c, const open_file& f,
                                       std::span<const pending_get> run) {
  // Below this, mapping and unmapping cost more than the copy they save: for 512 MiB in runs
  // of 32 blocks of 1390 bytes (44,480 bytes), ferryd took 0.70-0.75 s of CPU through mappings
  // against 0.59-0.61 s reading; in runs of 65,024-byte blocks, 0.18-0.19 s against 0.20-0.23 s.
  // The run's blocks as asked bound what it can span, so a short run costs no fstat here.
  std::uint64_t asked = 0;
  for (const auto& g : run) asked += g.block;
  if (asked < min_mapped_run) return 0;
  struct stat st {};
  if (::fstat(f.fd->get(), &st) != 0) return 0;
  const auto version = version_of(st);
  const auto size = version.size;
  // The GETs of the run (consecutive blocks) that lie within the file and within the mapping
  // that tells what is cached; an empty reply at the end, or a part of the file that grew since
  // it was mapped, is read.
  std::size_t n = 0;
  std::uint64_t end = run[0].offset;
  for (; n < run.size(); ++n) {
    const auto offset = run[n].offset;
    if (offset >= size) break;
    const auto length = std::min<std::uint64_t>(run[n].block, size - offset);
    if (offset + length > f.whole->end()) break;
    end = offset + length;
  }
  const auto begin = run[0].offset;
  if (n == 0 || end - begin < min_mapped_run) return 0;  // cut short by the end of the file
  // What is not in the page cache is read instead: on a disk it would block the loop (the pool
  // reads it), and a hole of a tmpfs file, mapped, would be filled with pages of zeros that a
  // read does not need (a 5 GiB sparse file took ferryd 10 s of CPU and 5 GiB that way).
  if (!f.whole->resident(begin, end - begin)) return 0;
  // A mapping of just this run, gone once its replies are sent: the process's resident set
  // then holds only what it is sending, whereas one long-lived mapping would gather every page
  // read through it (and the pages the kernel maps around each fault).
  auto map = file_mapping::map(f.fd->get(), begin, end - begin, true);
  if (!map) return 0;
  std::size_t done = 0;
  for (; done < n; ++done) {
    const auto& g = run[done];
    read_outcome r;
    r.version = version;
    r.length = static_cast<std::uint32_t>(std::min<std::uint64_t>(g.block, size - g.offset));
    r.eof = g.offset + r.length == size;
    if (!batch_.add_mapped(c, g.id, g.offset, r, map)) break;
    ++stats_.reads_inline;
    c.rate.charge(r.length + protocol::data_reply_overhead);
    c.payload_sent += r.length;
  }
  return done;
}

block_reader::one block_reader::serve_one(client_state& c, const pending_get& g,
                                          std::uint64_t now) {
  const auto* cached = files_.find(g.rel, now);
  if (cached == nullptr) return {};
  // A page-cache hit is answered right here; a read that would wait for a disk goes to the pool.
  auto r = read_block(cached->fd->get(), g.offset, g.block, batch_.payload_slot(g.block),
                      !cached->in_memory);
  if (r.would_block) return {false, protocol::errc::ok, cached->fd};
  ++stats_.reads_inline;
  if (r.error != protocol::errc::ok) return {false, r.error, nullptr};
  batch_.add(c, g.id, g.offset, r);
  c.rate.charge(r.length + protocol::data_reply_overhead);
  c.payload_sent += r.length;
  return {true, protocol::errc::ok, nullptr};
}

}  // namespace ferry::server
