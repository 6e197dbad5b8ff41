// ferry_impair: a UDP relay that impairs traffic between ferry clients and ferryd. Tests use it
// instead of netem, which this kernel lacks. See --help for the options.

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "tests/tools/impair_config.hpp"
#include "tests/tools/impair_relay.hpp"

namespace {

using ferry::impair::direction;
using ferry::impair::direction_stats;

std::string summary(const direction_stats& s) {
  return fmt::format(
      "received={} forwarded={} dropped_loss={} dropped_blackout={} dropped_queue={} "
      "duplicated={} reordered={} corrupted={} dropped_other={}",
      s.received, s.forwarded, s.dropped_loss, s.dropped_blackout, s.dropped_queue, s.duplicated,
      s.reordered, s.corrupted, s.dropped_other());
}

// With `with_series`, adds the --stats-interval counts as one comma-separated line.
std::string key_values(std::string_view prefix, const direction_stats& s, bool with_series) {
  std::string out;
  auto line = [&](std::string_view key, std::uint64_t value) {
    out += fmt::format("{}_{}={}\n", prefix, key, value);
  };
  line("received", s.received);
  line("forwarded", s.forwarded);
  line("dropped_loss", s.dropped_loss);
  line("dropped_blackout", s.dropped_blackout);
  line("dropped_queue", s.dropped_queue);
  line("duplicated", s.duplicated);
  line("reordered", s.reordered);
  line("corrupted", s.corrupted);
  line("corrupted_payload", s.corrupted_payload);
  line("dropped_send", s.dropped_send);
  line("dropped_no_mapping", s.dropped_no_mapping);
  line("dropped_foreign", s.dropped_foreign);
  line("dropped_truncated", s.dropped_truncated);
  line("dropped_memory", s.dropped_memory);
  line("dropped_shutdown", s.dropped_shutdown);
  line("recv_errors", s.recv_errors);
  if (with_series)
    out += fmt::format("{}_received_series={}\n", prefix, fmt::join(s.received_series, ","));
  return out;
}

// "START-END,..." in milliseconds from the first datagram, for the blackouts that began.
std::string windows_ms(const std::vector<ferry::impair::blackout_window>& windows) {
  std::string out;
  for (const auto& w : windows) {
    if (w.start_s < 0) continue;
    if (!out.empty()) out += ',';
    out += fmt::format("{:.0f}-{:.0f}", w.start_s * 1000, (w.start_s + w.duration_s) * 1000);
  }
  return out;
}

// Returns false and prints why if the file cannot be written.
bool write_stats_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    fmt::print(stderr, "ferry_impair: cannot write {}\n", path);
    return false;
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) fmt::print(stderr, "ferry_impair: cannot write {}\n", path);
  return ok && closed;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::impair::config cfg;
  std::string message;
  switch (ferry::impair::parse_command_line(argc, argv, cfg, message)) {
    case ferry::impair::parse_outcome::run:
      break;
    case ferry::impair::parse_outcome::exit_ok:
      return 0;
    case ferry::impair::parse_outcome::exit_usage:
      fmt::print(stderr, "ferry_impair: error: {}\n", message);
      return 2;
  }

  try {
    ferry::impair::relay proxy{cfg};
    proxy.start();
    // Scripts wait for this exact line, so it goes out before anything else and is flushed.
    fmt::print("listening on {}\n", proxy.local_address());
    std::fflush(stdout);
    const auto [rcvbuf, sndbuf] = proxy.socket_buffers();
    if (rcvbuf < cfg.socket_buffer_bytes)
      fmt::print(stderr, "ferry_impair: note: SO_RCVBUF is {} bytes, not the {} requested\n",
                 rcvbuf, cfg.socket_buffer_bytes);
    (void)sndbuf;
    proxy.run();

    const auto& up = proxy.stats(direction::up);
    const auto& down = proxy.stats(direction::down);
    fmt::print(stderr, "ferry_impair stats: up: {}; down: {}\n", summary(up), summary(down));
    if (!cfg.stats_file.empty()) {
      const bool series = cfg.stats_interval_ms > 0;
      std::string text = key_values("up", up, series) + key_values("down", down, series);
      if (series) text += fmt::format("stats_interval_ms={:g}\n", cfg.stats_interval_ms);
      for (direction d : {direction::up, direction::down})
        if (!proxy.blackouts(d).empty())
          text += fmt::format("{}_blackouts_ms={}\n", name_of(d), windows_ms(proxy.blackouts(d)));
      if (!write_stats_file(cfg.stats_file, text)) return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "ferry_impair: {}\n", e.what());
    return 1;
  }
}
