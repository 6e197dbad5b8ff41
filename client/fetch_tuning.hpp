#pragma once

// The fetcher's timing constants, shared by the files that implement it. Not a public header.

#include <chrono>
#include <cstddef>

#include "client/connection.hpp"

namespace ferry::client::fetch_tuning {

// Requests declared lost that are remembered, so a late answer can show the loss spurious.
inline constexpr std::size_t max_remembered_losses = 4096;
// Retransmission timeouts, and time, with no block received at all, after which the block size
// is taken to be too large for the path.
inline constexpr int blackhole_timeouts = 3;
inline constexpr auto blackhole_after = std::chrono::seconds{2};
// The timer that paces requests and looks for losses by time. Between two ticks a source may
// send a little ahead of its pacing rate: this much, so a tick that comes late is made up.
inline constexpr auto tick = std::chrono::milliseconds{1};
inline constexpr auto pacing_quantum = std::chrono::milliseconds{1};
inline constexpr auto flush_every = std::chrono::milliseconds{500};
inline constexpr auto progress_every = std::chrono::milliseconds{200};
inline constexpr auto trace_every = std::chrono::seconds{1};
// With several sources: silence for this long (or four RTTs) sets a source aside, and a
// source set aside is asked whether it is back this often.
inline constexpr auto silent_after = std::chrono::seconds{1};
inline constexpr auto probe_every = std::chrono::seconds{1};
// Error replies to GETs that a STAT of the same version then contradicts; past this many the
// server is taken at its word.
inline constexpr int max_contradicted_errors = 32;

}  // namespace ferry::client::fetch_tuning
