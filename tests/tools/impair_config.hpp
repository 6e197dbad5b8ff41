#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::impair {

// Which way a datagram travels. `up` is client to server, `down` is server to client.
enum class direction : std::uint8_t { up = 0, down = 1 };

[[nodiscard]] constexpr std::size_t index_of(direction d) noexcept {
  return static_cast<std::size_t>(d);
}
[[nodiscard]] constexpr std::string_view name_of(direction d) noexcept {
  return d == direction::up ? "up" : "down";
}

// A resolved socket address. The proxy does not link ferry_common, so it has its own.
struct socket_address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* addr() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  [[nodiscard]] int family() const noexcept { return storage.ss_family; }
};

// Formats an address as "127.0.0.1:7070" or "[::1]:7070".
[[nodiscard]] std::string to_string(const sockaddr* sa);

// One period of total loss, measured from the first datagram the proxy sees, or beginning with
// datagram number `at_datagram` (counted over both directions) if that is not zero, so that it
// falls at the same point of a transfer however fast the machine is.
struct blackout_window {
  double start_s = 0;  // An at_datagram window sets it when it begins; negative until then.
  double duration_s = 0;
  std::uint64_t at_datagram = 0;
};

inline constexpr std::uint64_t default_queue_bytes = 1024 * 1024;

// The impairments applied to one direction. Zero means "off" for every field.
struct direction_config {
  double loss = 0;     // Probability that a datagram is dropped.
  double dup = 0;      // Probability that a datagram is sent twice.
  double reorder = 0;  // Probability that a datagram is held back behind later ones.
  double corrupt = 0;  // Probability that one byte past corrupt_skip is flipped.
  double delay_ms = 0;
  double jitter_ms = 0;
  double rate_bytes_per_s = 0;  // Zero means unlimited.
  std::uint64_t queue_bytes = default_queue_bytes;
  std::vector<blackout_window> blackouts;

  // True when any impairment is active, i.e. the datagram cannot take the copy-free fast path.
  [[nodiscard]] bool impaired() const noexcept {
    return loss > 0 || dup > 0 || reorder > 0 || corrupt > 0 || delay_ms > 0 || jitter_ms > 0 ||
           rate_bytes_per_s > 0 || !blackouts.empty();
  }
};

// Everything the command line decides.
struct config {
  socket_address listen;
  socket_address upstream;
  direction_config up;
  direction_config down;
  std::uint32_t reorder_gap = 3;   // Datagrams that overtake a held one.
  double reorder_timeout_ms = 10;  // A held datagram leaves after this even if nothing follows.
  std::size_t corrupt_skip = 16;   // Bytes at the start of a datagram that are never corrupted.
  // Corruption of a data-block reply flips a byte of its payload, never of its fields, so that
  // only the block checksum can catch it.
  bool corrupt_payload = false;
  // Leave each upstream socket unconnected: accept replies from any port of the upstream host
  // and send the client's next datagrams to the port that last answered. TFTP needs this, since
  // its server answers from a new port (the transfer ID).
  bool follow_upstream_port = false;
  double stats_interval_ms = 0;  // Zero: no per-interval counts in the stats file.
  std::uint64_t seed = 1;
  double max_seconds = 3600;
  std::string stats_file;
  std::size_t max_clients = 1024;
  double idle_timeout_s = 60;
  int socket_buffer_bytes = 8 * 1024 * 1024;

  [[nodiscard]] const direction_config& dir(direction d) const noexcept {
    return d == direction::up ? up : down;
  }
};

enum class parse_outcome {
  run,         // The configuration is complete; start the proxy.
  exit_ok,     // Help was printed; exit with status 0.
  exit_usage,  // `message` holds one line describing the error; exit with status 2.
};

// Parses the command line into `out`. Never throws; every failure becomes exit_usage.
[[nodiscard]] parse_outcome parse_command_line(int argc, char** argv, config& out,
                                               std::string& message) noexcept;

// Exposed for testing by hand: "1.5M" -> 1500000, "64Ki" -> 65536. Returns nullopt on bad syntax.
[[nodiscard]] std::optional<double> parse_quantity(std::string_view text);

}  // namespace ferry::impair
