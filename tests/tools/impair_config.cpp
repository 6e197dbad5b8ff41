#include "tests/tools/impair_config.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>

#include <CLI/CLI.hpp>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <system_error>

namespace ferry::impair {

namespace {

// Thrown only inside this file and caught in parse_command_line, so that every bad value
// becomes a single usage line.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::optional<double> parse_double(std::string_view text) {
  double value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

double probability(const std::string& option, const std::string& text) {
  auto v = parse_double(text);
  if (!v || *v < 0 || *v > 1)
    throw usage_error(
        fmt::format("{}: expected a probability between 0 and 1, got '{}'", option, text));
  return *v;
}

double milliseconds(const std::string& option, const std::string& text) {
  auto v = parse_double(text);
  if (!v || *v < 0 || *v > 3'600'000)
    throw usage_error(
        fmt::format("{}: expected milliseconds between 0 and 3600000, got '{}'", option, text));
  return *v;
}

double bytes(const std::string& option, const std::string& text) {
  auto v = parse_quantity(text);
  if (!v || *v < 0 || *v > 1e15)
    throw usage_error(
        fmt::format("{}: expected a byte count such as 25M, 1.5G or 64Ki, got '{}'", option, text));
  return *v;
}

blackout_window blackout(const std::string& option, const std::string& text) {
  const auto colon = text.find(':');
  if (colon != std::string::npos) {
    const std::string_view start_text = std::string_view{text}.substr(0, colon);
    auto duration = parse_double(std::string_view{text}.substr(colon + 1));
    if (start_text.starts_with('@')) {
      auto n = parse_u64(start_text.substr(1));
      if (n && *n >= 1 && duration && *duration > 0) return {-1, *duration, *n};
    } else {
      auto start = parse_double(start_text);
      if (start && duration && *start >= 0 && *duration > 0) return {*start, *duration, 0};
    }
  }
  throw usage_error(fmt::format(
      "{}: expected START_S:DURATION_S or @DATAGRAM:DURATION_S with START >= 0, DATAGRAM >= 1 "
      "and DURATION > 0, got '{}'",
      option, text));
}

// Splits "HOST:PORT" or "[V6]:PORT" and resolves it. Name resolution blocks, which is fine
// because it happens before the loop starts.
socket_address resolve(const std::string& option, const std::string& text) {
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw usage_error(fmt::format("{}: expected [IPV6]:PORT, got '{}'", option, text));
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon)
      throw usage_error(
          fmt::format("{}: expected HOST:PORT or [IPV6]:PORT, got '{}'", option, text));
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto port_value = parse_u64(port);
  if (host.empty() || !port_value || *port_value > 65535)
    throw usage_error(
        fmt::format("{}: expected HOST:PORT with PORT 0..65535, got '{}'", option, text));

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw usage_error(fmt::format("{}: cannot resolve '{}': {}", option, host, gai_strerror(rc)));
  socket_address out;
  std::memcpy(&out.storage, found->ai_addr, found->ai_addrlen);
  out.length = found->ai_addrlen;
  ::freeaddrinfo(found);
  return out;
}

// The three spellings of a per-direction option: both ways, client to server, server to client.
struct directional_option {
  std::string both;
  std::string up;
  std::string down;
  CLI::Option* both_opt = nullptr;
  CLI::Option* up_opt = nullptr;
  CLI::Option* down_opt = nullptr;

  void add(CLI::App& app, const std::string& name, const std::string& value,
           const std::string& what) {
    both_opt = app.add_option("--" + name, both, what + " (both directions)")->type_name(value);
    up_opt = app.add_option("--" + name + "-up,--to-server-" + name, up,
                            what + " (client to server only)")
                 ->type_name(value);
    down_opt = app.add_option("--" + name + "-down,--to-client-" + name, down,
                              what + " (server to client only)")
                   ->type_name(value);
  }

  // Returns the text that applies to `d`, if any, and the option name to quote in errors.
  [[nodiscard]] std::optional<std::pair<std::string, std::string>> for_direction(
      direction d) const {
    const CLI::Option* specific = d == direction::up ? up_opt : down_opt;
    const std::string& value = d == direction::up ? up : down;
    if (specific->count() > 0) return std::pair{specific->get_name(), value};
    if (both_opt->count() > 0) return std::pair{both_opt->get_name(), both};
    return std::nullopt;
  }
};

struct directional_list {
  std::vector<std::string> both;
  std::vector<std::string> up;
  std::vector<std::string> down;

  void add(CLI::App& app, const std::string& name, const std::string& what) {
    // One value per occurrence, so a stray positional argument is an error, not a window.
    app.add_option("--" + name, both, what + " (both directions; repeatable)")
        ->type_name("START_S:DURATION_S")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--" + name + "-up,--to-server-" + name, up,
                   what + " (client to server only; repeatable)")
        ->type_name("START_S:DURATION_S")
        ->allow_extra_args(false)
        ->take_all();
    app.add_option("--" + name + "-down,--to-client-" + name, down,
                   what + " (server to client only; repeatable)")
        ->type_name("START_S:DURATION_S")
        ->allow_extra_args(false)
        ->take_all();
  }
};

}  // namespace

std::string to_string(const sockaddr* sa) {
  std::array<char, INET6_ADDRSTRLEN + 1> text{};
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text.data(), static_cast<socklen_t>(text.size()));
    return fmt::format("[{}]:{}", text.data(), ntohs(in6->sin6_port));
  }
  if (sa->sa_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in4->sin_addr, text.data(), static_cast<socklen_t>(text.size()));
    return fmt::format("{}:{}", text.data(), ntohs(in4->sin_port));
  }
  return "?";
}

std::optional<double> parse_quantity(std::string_view text) {
  // Decimal suffixes follow link-rate convention (25M is 25,000,000); "i" asks for binary.
  struct suffix {
    std::string_view text;
    double scale;
  };
  static constexpr std::array<suffix, 12> suffixes{{
      {"KiB", 1024.0},
      {"MiB", 1048576.0},
      {"GiB", 1073741824.0},
      {"Ki", 1024.0},
      {"Mi", 1048576.0},
      {"Gi", 1073741824.0},
      {"KB", 1e3},
      {"MB", 1e6},
      {"GB", 1e9},
      {"K", 1e3},
      {"M", 1e6},
      {"G", 1e9},
  }};
  double scale = 1;
  for (const auto& s : suffixes) {
    if (text.size() > s.text.size() && text.ends_with(s.text)) {
      text.remove_suffix(s.text.size());
      scale = s.scale;
      break;
    }
    // Lower-case k/m/g are accepted too, because people type them.
    if (s.text.size() == 1 && text.size() > 1 &&
        text.back() == static_cast<char>(s.text.front() - 'A' + 'a')) {
      text.remove_suffix(1);
      scale = s.scale;
      break;
    }
  }
  auto v = parse_double(text);
  if (!v) return std::nullopt;
  return *v * scale;
}

parse_outcome parse_command_line(int argc, char** argv, config& out,
                                 std::string& message) noexcept {
  try {
    CLI::App app{
        "UDP impairment proxy for ferry tests. Relays datagrams between clients and one upstream "
        "server and applies loss, duplication, reordering, corruption, delay, rate limiting and "
        "blackouts independently in each direction (up = client to server, down = server to "
        "client). Direction-specific options override the two-way ones.",
        "ferry_impair"};
    std::string listen_text;
    std::string upstream_text;
    app.add_option("--listen", listen_text, "Address to bind, e.g. 127.0.0.1:0 or [::1]:0")
        ->required()
        ->type_name("ADDR:PORT");
    app.add_option("--upstream", upstream_text, "Server address, e.g. 127.0.0.1:7070")
        ->required()
        ->type_name("ADDR:PORT");

    directional_option loss, dup, reorder, corrupt, delay, jitter, rate, rate_mbit, queue;
    loss.add(app, "loss", "P", "Drop probability P in 0..1");
    dup.add(app, "dup", "P", "Duplicate probability P in 0..1");
    reorder.add(app, "reorder", "P", "Probability P that a datagram is held behind later ones");
    corrupt.add(app, "corrupt", "P", "Probability P that one byte past --corrupt-skip is flipped");
    delay.add(app, "delay", "MS", "Fixed delay in milliseconds");
    jitter.add(app, "jitter", "MS", "Uniform +/- jitter in milliseconds around --delay");
    rate.add(app, "rate", "BYTES_PER_S",
             "Link rate in bytes/s (suffixes K, M, G; Ki, Mi, Gi); 0 = unlimited");
    rate_mbit.add(app, "rate-mbit", "MBIT_PER_S", "Link rate in Mbit/s");
    queue.add(app, "queue", "BYTES",
              fmt::format("Rate limiter queue in bytes, tail drop beyond it (default {})",
                          default_queue_bytes));
    directional_list blackouts;
    blackouts.add(app, "blackout",
                  "START_S:DURATION_S of 100% loss, measured from the first datagram; "
                  "@N:DURATION_S begins with the N-th datagram (both directions counted)");

    std::string reorder_gap = "3";
    std::string reorder_timeout = "10";
    std::string corrupt_skip = "16";
    std::string seed = "1";
    std::string stats_interval = "0";
    std::string max_seconds = "3600";
    std::string max_clients = "1024";
    std::string idle_timeout = "60";
    std::string socket_buffer = "8Mi";
    app.add_option("--reorder-gap", reorder_gap,
                   "Datagrams that overtake a reordered one (default 3)")
        ->type_name("N");
    app.add_option("--reorder-timeout", reorder_timeout,
                   "Milliseconds after which a reordered datagram leaves anyway (default 10)")
        ->type_name("MS");
    app.add_option("--corrupt-skip", corrupt_skip,
                   "Leading bytes never corrupted, i.e. the protocol header (default 16)")
        ->type_name("N");
    app.add_flag("--corrupt-payload", out.corrupt_payload,
                 "Corrupt a data-block reply (type 0x83) in its payload only, past its 82 bytes "
                 "of header and fields; other datagrams as --corrupt-skip says");
    app.add_flag("--follow-upstream-port", out.follow_upstream_port,
                 "Accept replies from any port of the upstream host and send the client's next "
                 "datagrams to the port that last answered, as TFTP needs (its server answers "
                 "from a new port); the first still goes to --upstream");
    app.add_option("--seed", seed, "Random seed; one stream per direction (default 1)")
        ->type_name("N");
    app.add_option("--max-seconds", max_seconds, "Exit after this many seconds (default 3600)")
        ->type_name("S");
    app.add_option("--stats-file", out.stats_file, "Write key=value counters here on exit")
        ->type_name("PATH");
    app.add_option("--stats-interval", stats_interval,
                   "Also write datagrams received per interval of MS milliseconds, counted from "
                   "the first datagram, to the stats file (default 0: off)")
        ->type_name("MS");
    app.add_option("--max-clients", max_clients, "Client address mappings kept (default 1024)")
        ->type_name("N");
    app.add_option("--idle-timeout", idle_timeout,
                   "Seconds after which an idle client mapping is dropped (default 60)")
        ->type_name("S");
    app.add_option("--socket-buffer", socket_buffer, "SO_RCVBUF/SO_SNDBUF to request (default 8Mi)")
        ->type_name("BYTES");

    try {
      app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
      fmt::print("{}", app.help());
      return parse_outcome::exit_ok;
    } catch (const CLI::ParseError& e) {
      message = e.what();
      return parse_outcome::exit_usage;
    }

    out.listen = resolve("--listen", listen_text);
    out.upstream = resolve("--upstream", upstream_text);

    for (direction d : {direction::up, direction::down}) {
      direction_config& dc = d == direction::up ? out.up : out.down;
      if (auto v = loss.for_direction(d)) dc.loss = probability(v->first, v->second);
      if (auto v = dup.for_direction(d)) dc.dup = probability(v->first, v->second);
      if (auto v = reorder.for_direction(d)) dc.reorder = probability(v->first, v->second);
      if (auto v = corrupt.for_direction(d)) dc.corrupt = probability(v->first, v->second);
      if (auto v = delay.for_direction(d)) dc.delay_ms = milliseconds(v->first, v->second);
      if (auto v = jitter.for_direction(d)) dc.jitter_ms = milliseconds(v->first, v->second);
      // The more specific spelling wins, so --rate-mbit-up overrides --rate.
      auto byte_rate = rate.for_direction(d);
      auto mbit_rate = rate_mbit.for_direction(d);
      const bool byte_specific = (d == direction::up ? rate.up_opt : rate.down_opt)->count() > 0;
      const bool mbit_specific =
          (d == direction::up ? rate_mbit.up_opt : rate_mbit.down_opt)->count() > 0;
      if (byte_rate && mbit_rate && byte_specific == mbit_specific)
        throw usage_error(fmt::format("{} and {} both set the {} rate; give only one",
                                      byte_rate->first, mbit_rate->first, name_of(d)));
      if (mbit_rate && (!byte_rate || mbit_specific)) {
        auto v = parse_double(mbit_rate->second);
        if (!v || *v < 0 || *v > 1e6)
          throw usage_error(fmt::format("{}: expected Mbit/s between 0 and 1000000, got '{}'",
                                        mbit_rate->first, mbit_rate->second));
        dc.rate_bytes_per_s = *v * 1e6 / 8;
      } else if (byte_rate) {
        dc.rate_bytes_per_s = bytes(byte_rate->first, byte_rate->second);
      }
      if (auto v = queue.for_direction(d)) {
        const double q = bytes(v->first, v->second);
        if (q < 1)
          throw usage_error(fmt::format("{}: the queue must hold at least 1 byte", v->first));
        dc.queue_bytes = static_cast<std::uint64_t>(q);
      }
      const auto& specific = d == direction::up ? blackouts.up : blackouts.down;
      for (const auto& text : blackouts.both) dc.blackouts.push_back(blackout("--blackout", text));
      for (const auto& text : specific) dc.blackouts.push_back(blackout("--blackout", text));
    }

    auto gap = parse_u64(reorder_gap);
    if (!gap || *gap < 1 || *gap > 1000)
      throw usage_error(fmt::format("--reorder-gap: expected 1..1000, got '{}'", reorder_gap));
    out.reorder_gap = static_cast<std::uint32_t>(*gap);
    out.reorder_timeout_ms = milliseconds("--reorder-timeout", reorder_timeout);
    auto skip = parse_u64(corrupt_skip);
    if (!skip || *skip > 65535)
      throw usage_error(fmt::format("--corrupt-skip: expected 0..65535, got '{}'", corrupt_skip));
    out.corrupt_skip = static_cast<std::size_t>(*skip);
    out.stats_interval_ms = milliseconds("--stats-interval", stats_interval);
    if (out.stats_interval_ms > 0 && out.stats_interval_ms < 1)
      throw usage_error(
          fmt::format("--stats-interval: expected 0 or at least 1 ms, got '{}'", stats_interval));
    auto seed_value = parse_u64(seed);
    if (!seed_value)
      throw usage_error(fmt::format("--seed: expected an unsigned 64-bit integer, got '{}'", seed));
    out.seed = *seed_value;
    auto max_s = parse_double(max_seconds);
    if (!max_s || *max_s <= 0 || *max_s > 1e7)
      throw usage_error(fmt::format("--max-seconds: expected seconds > 0, got '{}'", max_seconds));
    out.max_seconds = *max_s;
    auto clients = parse_u64(max_clients);
    if (!clients || *clients < 1 || *clients > 65536)
      throw usage_error(fmt::format("--max-clients: expected 1..65536, got '{}'", max_clients));
    out.max_clients = static_cast<std::size_t>(*clients);
    auto idle = parse_double(idle_timeout);
    if (!idle || *idle <= 0 || *idle > 1e7)
      throw usage_error(
          fmt::format("--idle-timeout: expected seconds > 0, got '{}'", idle_timeout));
    out.idle_timeout_s = *idle;
    const double buffer = bytes("--socket-buffer", socket_buffer);
    if (buffer < 4096 || buffer > 1024.0 * 1024 * 1024)
      throw usage_error(fmt::format("--socket-buffer: expected 4Ki..1Gi, got '{}'", socket_buffer));
    out.socket_buffer_bytes = static_cast<int>(buffer);
    return parse_outcome::run;
  } catch (const std::exception& e) {
    message = e.what();
    return parse_outcome::exit_usage;
  } catch (...) {
    message = "unexpected error while parsing the command line";
    return parse_outcome::exit_usage;
  }
}

}  // namespace ferry::impair
